from governance.models.approvals import (
    DEFAULT_APPROVAL_TTL,
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalStatus,
    ApprovalStep,
    ApprovalVerdict,
)
from governance.models.audit import GENESIS_HASH, AuditEvent
from governance.models.consents import (
    ConsentChannel,
    ConsentPurpose,
    ConsentRecord,
    ConsentRole,
    ConsentStatus,
    ConsentTerritory,
)
from governance.models.evidence import EvidenceFile, EvidenceKind
from governance.models.persons import Person
from governance.models.users import User
from governance.models.vocabulary import WORLDWIDE, Channel, Purpose, RiskLevel, Territory

__all__ = [
    "DEFAULT_APPROVAL_TTL",
    "GENESIS_HASH",
    "WORLDWIDE",
    "ApprovalDecision",
    "ApprovalPolicy",
    "ApprovalRequest",
    "ApprovalStatus",
    "ApprovalStep",
    "ApprovalVerdict",
    "AuditEvent",
    "Channel",
    "ConsentChannel",
    "ConsentPurpose",
    "ConsentRecord",
    "ConsentRole",
    "ConsentStatus",
    "ConsentTerritory",
    "EvidenceFile",
    "EvidenceKind",
    "Person",
    "Purpose",
    "RiskLevel",
    "Territory",
    "User",
]
