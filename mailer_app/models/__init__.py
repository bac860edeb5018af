"""Every table, imported here so SQLModel.metadata (and Alembic) sees them all."""

from mailer_app.models.alerts import AlertEvent, AlertKind
from mailer_app.models.audit import AuditEntry
from mailer_app.models.base import Source, utcnow
from mailer_app.models.campaigns import (
    BuildStatus,
    BuiltMessage,
    Campaign,
    CampaignAttachment,
    CampaignBuild,
    CampaignRun,
    CampaignStatus,
    CampaignVersion,
    ReviewDecision,
    ReviewStatus,
    RunKind,
)
from mailer_app.models.contacts import (
    Contact,
    ContactImport,
    ContactList,
    Suppression,
    SuppressionReason,
)
from mailer_app.models.placement import (
    TERMINAL_PLACEMENTS,
    Placement,
    PlacementCheck,
    PlacementResult,
    PlacementRollup,
    PlacementRollupDirty,
    PlacementRun,
    PlacementRunKind,
)
from mailer_app.models.secrets import Secret
from mailer_app.models.seeds import (
    Esp,
    SeedAccount,
    SeedAuthMethod,
    SeedList,
    SeedListMember,
    SeedProvider,
    SeedStatus,
)
from mailer_app.models.senders import SenderAccount, TransportSecurity
from mailer_app.models.sending import (
    AppendStatus,
    BounceEvent,
    BounceKind,
    SendAttempt,
    SendRecord,
    SendStatus,
)
from mailer_app.models.tenancy import ApiKey, Membership, Role, User, UserSession, Workspace

__all__ = [
    "ReviewDecision",
    "CampaignBuild",
    "BuildStatus",
    "TERMINAL_PLACEMENTS",
    "AlertEvent",
    "AlertKind",
    "ApiKey",
    "AppendStatus",
    "BounceEvent",
    "BounceKind",
    "AuditEntry",
    "BuiltMessage",
    "Campaign",
    "CampaignAttachment",
    "CampaignRun",
    "CampaignStatus",
    "CampaignVersion",
    "Contact",
    "ContactImport",
    "ContactList",
    "Esp",
    "Membership",
    "Placement",
    "PlacementCheck",
    "PlacementResult",
    "PlacementRollup",
    "PlacementRollupDirty",
    "PlacementRun",
    "PlacementRunKind",
    "ReviewStatus",
    "Role",
    "RunKind",
    "Secret",
    "SeedAccount",
    "SeedAuthMethod",
    "SeedList",
    "SeedListMember",
    "SeedProvider",
    "SeedStatus",
    "SendAttempt",
    "SendRecord",
    "SendStatus",
    "SenderAccount",
    "Source",
    "Suppression",
    "SuppressionReason",
    "TransportSecurity",
    "User",
    "UserSession",
    "Workspace",
    "utcnow",
]
