"""Published JSON Schemas, kept in the repository and served by the app."""

from pathlib import Path

CAMPAIGN_SCHEMA_PATH = Path(__file__).resolve().parent / "campaign.schema.json"
