"""GET /exports/messages/{id}.eml: one built message, exactly as it will be sent.

The review page links here. The browser's session cookie says who asks; any
signed-in person of the message's workspace gets the file (viewers review too),
nobody else: a message of another workspace is "not found".
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from mailer_app.api.contacts import SESSION_COOKIE
from mailer_app.db import session_scope
from mailer_app.models import Role
from mailer_app.services import ServiceError, auth, review


def _message(token: str, message_id: int) -> tuple[bytes, str]:
    with session_scope() as session:
        user = auth.resolve_session(session=session, token=token) if token else None
        auth.require_role(user, *Role)
        return review.eml_bytes(
            session=session, workspace_id=user.workspace_id, message_id=message_id
        )


async def message_eml(request: Request) -> Response:
    message_id = int(request.path_params["message_id"])
    try:
        data, filename = await run_in_threadpool(
            _message, request.cookies.get(SESSION_COOKIE, ""), message_id
        )
    except auth.PermissionDenied as exc:
        return PlainTextResponse(str(exc), status_code=403)
    except ServiceError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    return Response(
        data,
        media_type="message/rfc822",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
