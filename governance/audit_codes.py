"""The single registry of audit action codes.

Every ``AuditEvent`` stores a stable integer ``action`` code; humans and the API use the dotted
``api_name`` (``"consent.revoke"``). Codes are grouped in numeric ranges, one range per domain,
like Zulip's ``AuditLogEventType``; duplicates are refused at import time, like Sentry's
``AuditLogEventManager``.

Rules (the chain is hash-linked, so a stored code can never be reinterpreted):

* A code, once released, is never changed, renumbered or reused, and its meaning never
  changes. A retired action stays in the enum (with a ``# retired`` comment) so that old
  events still resolve.
* The ``api_name`` is ``<entity>.<verb>`` in lower snake case and is unique.

To add an action:

1. Pick the range of its domain in ``AUDIT_CODE_RANGES`` (add a range in a free block if the
   domain has none; ranges never overlap) and take the next free code in it.
2. Add ``NAME = <code>, "<entity>.<verb>"`` to ``AuditAction`` under the range's comment.
3. Record the event with ``governance.services.audit.audit_event_record`` inside the same
   transaction as the state change it describes.

The import-time checks at the bottom of this module (and ``tests/governance/test_audit.py``)
enforce the rules above.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import IntEnum, unique

# Blocks of codes, one per domain. Governance owns 1000-1999; the others are reserved for the
# issues that build on it (render jobs, model registry, datasets, provenance, leakage checks).
AUDIT_CODE_RANGES: Mapping[str, range] = {
    "roles and object permissions": range(1000, 1100),
    "persons": range(1100, 1200),
    "consents": range(1200, 1300),
    "approvals": range(1300, 1400),
    "audit trail": range(1400, 1500),
    "vocabularies": range(1500, 1600),
    # 1600-1999: free for further governance domains.
    "render jobs (reenactment)": range(2000, 2200),
    "model registry": range(3000, 3100),
    "licensed datasets": range(3100, 3200),
    "provenance (C2PA)": range(3200, 3300),
    "identity leakage checks": range(3300, 3400),
    "face identity and enrolment": range(3400, 3500),
    "system and maintenance": range(9000, 10000),
}


@unique
class AuditAction(IntEnum):
    """Stable action codes. ``AuditAction.CONSENT_REVOKE.api_name == "consent.revoke"``."""

    api_name: str

    def __new__(cls, code: int, api_name: str) -> AuditAction:
        member = int.__new__(cls, code)
        member._value_ = code
        member.api_name = api_name
        return member

    # 1000-1099 roles and object permissions
    ROLE_GRANT = 1001, "role.grant"
    ROLE_REVOKE = 1002, "role.revoke"
    PERMISSION_GRANT = 1003, "permission.grant"
    PERMISSION_REVOKE = 1004, "permission.revoke"

    # 1100-1199 persons
    PERSON_CREATE = 1101, "person.create"
    PERSON_REFERENCE_PHOTO_DOWNLOAD = 1102, "person.reference_photo_download"

    # 1200-1299 consents
    CONSENT_RECORD = 1201, "consent.record"
    CONSENT_SUPERSEDE = 1202, "consent.supersede"
    CONSENT_REVOKE = 1203, "consent.revoke"
    CONSENT_EVIDENCE_DOWNLOAD = 1204, "consent.evidence_download"

    # 1300-1399 approvals
    APPROVAL_POLICY_CREATE = 1301, "approval_policy.create"
    APPROVAL_POLICY_UPDATE = 1302, "approval_policy.update"
    APPROVAL_REQUEST_CREATE = 1311, "approval_request.create"
    APPROVAL_STEP_DECIDE = 1312, "approval_step.decide"
    APPROVAL_REQUEST_APPROVE = 1313, "approval_request.approve"
    APPROVAL_REQUEST_REJECT = 1314, "approval_request.reject"
    APPROVAL_REQUEST_REQUEST_CHANGES = 1315, "approval_request.request_changes"
    APPROVAL_REQUEST_CANCEL = 1316, "approval_request.cancel"

    # 1400-1499 audit trail
    AUDIT_EXPORT = 1401, "audit.export"

    # 1500-1599 vocabularies (purposes, channels, territories)
    VOCABULARY_CREATE = 1501, "vocabulary.create"
    VOCABULARY_UPDATE = 1502, "vocabulary.update"

    @property
    def label(self) -> str:
        return self.api_name

    @classmethod
    def from_code(cls, code: int) -> AuditAction:
        """The action stored as ``code`` (``ValueError`` if there is none)."""
        member = cls._value2member_map_.get(code)
        if not isinstance(member, AuditAction):
            raise ValueError(f"Unknown audit action code {code}.")
        return member

    @classmethod
    def from_lookup(cls, value: str) -> AuditAction:
        """An action from its api name (``consent.revoke``) or its code as text (``1203``)."""
        return cls.from_code(int(value)) if value.isdigit() else cls.from_api_name(value)

    @classmethod
    def from_api_name(cls, api_name: str) -> AuditAction:
        try:
            return _BY_API_NAME[api_name]
        except KeyError:
            raise ValueError(f"Unknown audit action {api_name!r}.") from None

    @classmethod
    def choices(cls) -> list[tuple[int, str]]:
        return [(member.value, member.api_name) for member in cls]


_API_NAME = re.compile(r"^[a-z][a-z_]*(\.[a-z][a-z_]*)+$")


def _check_registry() -> dict[str, AuditAction]:
    spans = sorted(AUDIT_CODE_RANGES.items(), key=lambda item: item[1].start)
    for (name_a, a), (name_b, b) in zip(spans, spans[1:], strict=False):
        if a.stop > b.start:
            raise ImportError(f"Audit code ranges {name_a!r} and {name_b!r} overlap.")
    by_name: dict[str, AuditAction] = {}
    for member in AuditAction:
        if not _API_NAME.match(member.api_name):
            raise ImportError(f"{member.name}: api_name {member.api_name!r} is not dotted snake.")
        if member.api_name in by_name:
            raise ImportError(f"Duplicate audit api_name {member.api_name!r}.")
        by_name[member.api_name] = member
        if not any(member.value in span for span in AUDIT_CODE_RANGES.values()):
            raise ImportError(f"{member.name} = {member.value} lies in no declared range.")
    return by_name


_BY_API_NAME = _check_registry()
