"""/unsubscribe/{token}: the link in every message (RFC 8058 one-click unsubscribe).

- GET shows a small confirmation page with an "Unsubscribe" button and changes
  nothing: mail scanners and link previews open links, people have to press the button.
- POST unsubscribes. Mail clients offering one-click unsubscribe send
  `List-Unsubscribe=One-Click` (form-encoded or multipart) with no cookies and follow
  no redirects, so the answer is a plain 200 page; the page's button posts the same.
- A link that is not genuine (changed, cut short, made with another key) gets a 400
  page saying so, and nothing changes.

The page is self-contained: no script, no external assets, every value escaped, no
cookie read or set. Its links carry the recipient's address, so it is never cached,
never framed and sends no referrer.
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from mailer_app.db import session_scope
from mailer_app.models import Source
from mailer_app.services import InvalidInput
from mailer_app.services import unsubscribe as service

ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
MAX_BODY_BYTES = 16_384  # the one-click body is 26 bytes; a form a little more

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f6f6f9;
color:#1c1c24;margin:0;padding:2rem 1rem;line-height:1.5}
main{max-width:32rem;margin:3rem auto;background:#fff;border:1px solid #e2e2ea;
border-radius:8px;padding:1.5rem 2rem}
h1{font-size:1.35rem;margin:0 0 .75rem}
p{margin:.5rem 0}
button{font:inherit;font-weight:600;color:#fff;background:#3e63dd;border:0;
border-radius:6px;padding:.6rem 1.4rem;margin-top:1rem;cursor:pointer}
button:hover,button:focus{background:#3358d4}
.muted{color:#60606c;font-size:.9rem}
"""


def _page(title: str, body: str, *, status_code: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body}</main></body></html>\n"
    )
    return HTMLResponse(document, status_code=status_code, headers=_HEADERS)


def _invalid() -> HTMLResponse:
    return _page(
        "This link is not valid",
        f"<p>{escape(service.INVALID_LINK)}</p><p class='muted'>Nothing was changed.</p>",
        status_code=400,
    )


def _form(request: service.UnsubscribeRequest, *, lead: str = "") -> str:
    # No action: the form posts back to this very address, whatever prefix a proxy adds.
    return (
        (f"<p>{escape(lead)}</p>" if lead else "")
        + f"<p>Stop emails to <strong>{escape(request.email)}</strong> from "
        f"<strong>{escape(request.workspace_name)}</strong>?</p>"
        '<form method="post">'
        f'<input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">'
        '<button type="submit">Unsubscribe</button></form>'
    )


def _check(token: str) -> service.UnsubscribeRequest:
    with session_scope() as session:
        return service.check_unsubscribe(session=session, token=token)


def _unsubscribe(token: str) -> service.UnsubscribeRequest:
    with session_scope() as session:
        return service.unsubscribe(session=session, token=token, source=Source.API)


async def unsubscribe_page(request: Request) -> HTMLResponse:
    """GET: what the link would do, and the button. Never unsubscribes."""
    try:
        found = await run_in_threadpool(_check, request.path_params["token"])
    except InvalidInput:
        return _invalid()
    if found.already_unsubscribed:
        return _page(
            "You are unsubscribed",
            f"<p><strong>{escape(found.email)}</strong> gets no more emails from "
            f"<strong>{escape(found.workspace_name)}</strong>.</p>",
        )
    return _page("Unsubscribe", _form(found))


async def unsubscribe_post(request: Request) -> HTMLResponse:
    """POST: one-click (RFC 8058) or the page's button: unsubscribes."""
    token = request.path_params["token"]
    body = await _read_body(request)
    if body is None:
        return _page("Request too large", "<p>Nothing was changed.</p>", status_code=413)
    if not await _asks_one_click(request, body):
        # Not the one-click request (RFC 8058 requires the body): ask with the button.
        try:
            found = await run_in_threadpool(_check, token)
        except InvalidInput:
            return _invalid()
        return _page(
            "Unsubscribe", _form(found, lead="Press the button to confirm."), status_code=400
        )
    try:
        done = await run_in_threadpool(_unsubscribe, token)
    except InvalidInput:
        return _invalid()
    return _page(
        "You are unsubscribed",
        f"<p><strong>{escape(done.email)}</strong> will get no more emails from "
        f"<strong>{escape(done.workspace_name)}</strong>.</p>",
    )


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is larger than any unsubscribe request."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


async def _asks_one_click(request: Request, body: bytes) -> bool:
    """Whether the body carries List-Unsubscribe=One-Click (form-encoded or multipart)."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        return await _multipart_one_click(request, body)
    # application/x-www-form-urlencoded, or a client that sent the body with no type.
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return False
    return ONE_CLICK_VALUE in fields.get(ONE_CLICK_FIELD, [])


async def _multipart_one_click(request: Request, body: bytes) -> bool:
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay():
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=0, max_fields=20).parse()
    except MultiPartException:
        return False
    try:
        return form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
    finally:
        await form.close()
