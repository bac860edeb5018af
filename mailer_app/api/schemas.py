"""GET /schemas/campaign.schema.json: the published JSON Schema of campaign documents.

The file kept in the repository (mailer_app/schemas/) is served as it is, so what
scripts validate against is exactly what the import checks.
"""

from starlette.requests import Request
from starlette.responses import Response

from mailer_app.schemas import CAMPAIGN_SCHEMA_PATH


async def campaign_schema(_request: Request) -> Response:
    return Response(
        CAMPAIGN_SCHEMA_PATH.read_bytes(),
        media_type="application/schema+json",
        headers={"Cache-Control": "public, max-age=300"},
    )
