"""GET /exports/campaigns/{id}/report.csv and report.json: a campaign's report.

The report page links here. The browser's session cookie says who asks; any
signed-in person of the campaign's workspace gets it (viewers read reports too),
nobody else: a campaign of another workspace is "not found". Who is checked, and
the download audited, before the first byte; then the per-recipient rows are
streamed from the database in batches (services/reports.py), never held whole.
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from mailer_app.api.contacts import SESSION_COOKIE
from mailer_app.db import session_scope
from mailer_app.models import Role
from mailer_app.services import ServiceError, auth, reports

HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _authorize(token: str, campaign_id: int, kind: str) -> tuple[int, dict | None]:
    """The workspace id (and, for JSON, the summary document) once the user may read it."""
    with session_scope() as session:
        user = auth.resolve_session(session=session, token=token) if token else None
        auth.require_role(user, *Role)
        report = reports.campaign_report(
            session=session, workspace_id=user.workspace_id, campaign_id=campaign_id
        )
        reports.record_export(
            session=session, workspace_id=user.workspace_id, campaign_id=campaign_id,
            user_id=user.user_id, kind=kind,
        )  # fmt: skip
        document = reports.report_document(report) if kind == "json" else None
        return user.workspace_id, document


def _stream(workspace_id: int, campaign_id: int, document: dict | None) -> Iterator[str]:
    # Iterated in Starlette's thread pool; the session lives as long as the download.
    with session_scope() as session:
        rows = reports.recipient_rows(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id
        )
        if document is None:
            yield "\ufeff"  # so spreadsheets read the file as UTF-8
            yield from reports.csv_chunks(rows)
        else:
            yield from reports.json_chunks(document, rows)


async def _report(request: Request, kind: str) -> Response:
    campaign_id = int(request.path_params["campaign_id"])
    token = request.cookies.get(SESSION_COOKIE, "")
    try:
        workspace_id, document = await run_in_threadpool(_authorize, token, campaign_id, kind)
    except auth.PermissionDenied as exc:
        return PlainTextResponse(str(exc), status_code=403)
    except ServiceError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    filename = f"campaign-{campaign_id}-report.{kind}"
    media = "text/csv; charset=utf-8" if kind == "csv" else "application/json"
    return StreamingResponse(
        _stream(workspace_id, campaign_id, document),
        media_type=media,
        headers={**HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def campaign_report_csv(request: Request) -> Response:
    return await _report(request, "csv")


async def campaign_report_json(request: Request) -> Response:
    return await _report(request, "json")
