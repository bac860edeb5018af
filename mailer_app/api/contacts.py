"""GET /exports/contact-imports/{id}/rejected.csv: every row an import skipped, and why.

The page links here (the report can be far bigger than what fits in page state).
The browser's session cookie says who asks; only people who may import contacts
into that workspace get the file.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from mailer_app.db import session_scope
from mailer_app.services import ServiceError, auth, contacts

SESSION_COOKIE = "mailer_session"


def _report(token: str, import_id: int):
    with session_scope() as session:
        user = auth.resolve_session(session=session, token=token) if token else None
        auth.require_role(user, *contacts.CONTACT_MANAGER_ROLES)
        return contacts.import_report_path(
            session=session, workspace_id=user.workspace_id, import_id=import_id
        )


async def contact_import_report(request: Request) -> Response:
    import_id = int(request.path_params["import_id"])
    try:
        path = await run_in_threadpool(_report, request.cookies.get(SESSION_COOKIE, ""), import_id)
    except auth.PermissionDenied as exc:
        return PlainTextResponse(str(exc), status_code=403)
    except ServiceError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    return FileResponse(
        path,
        media_type="text/csv; charset=utf-8",
        filename=f"import-{import_id}-rejected-rows.csv",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
