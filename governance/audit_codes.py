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

    # 2000-2199 render jobs (reenactment). One code per state the job can enter, plus the
    # events around a run that change no state.
    RENDER_JOB_SUBMIT = 2001, "render_job.submit"
    RENDER_JOB_AWAIT_APPROVAL = 2002, "render_job.await_approval"
    RENDER_JOB_APPROVE = 2003, "render_job.approve"
    RENDER_JOB_QUEUE = 2004, "render_job.queue"
    RENDER_JOB_START = 2005, "render_job.start"
    RENDER_JOB_GENERATE = 2006, "render_job.generate"
    RENDER_JOB_VERIFY = 2007, "render_job.verify"
    RENDER_JOB_PUBLISH = 2008, "render_job.publish"
    RENDER_JOB_REJECT = 2009, "render_job.reject"
    RENDER_JOB_QUARANTINE = 2010, "render_job.quarantine"
    RENDER_JOB_FAIL = 2011, "render_job.fail"
    RENDER_JOB_CANCEL = 2012, "render_job.cancel"
    RENDER_JOB_WITHDRAW = 2013, "render_job.withdraw"
    RENDER_JOB_RESTART = 2021, "render_job.restart"
    RENDER_JOB_VERIFICATION_STEP = 2022, "render_job.verification_step"
    RENDER_JOB_DOWNLOAD_LINK = 2023, "render_job.download_link"
    RENDER_JOB_DOWNLOAD = 2024, "render_job.download"
    RENDER_JOB_RETRY = 2025, "render_job.retry"
    WEBHOOK_ENDPOINT_CREATE = 2101, "webhook_endpoint.create"
    WEBHOOK_ENDPOINT_DISABLE = 2102, "webhook_endpoint.disable"

    # 3200-3299 provenance (C2PA)
    PROVENANCE_SIGN = 3201, "provenance.sign"

    # 3000-3099 model registry
    MODEL_VERSION_REGISTER = 3001, "model_version.register"
    MODEL_VERSION_BLOCK = 3002, "model_version.block"
    MODEL_VERSION_DEPRECATE = 3003, "model_version.deprecate"

    # 3100-3199 licensed datasets (licensors, licences, datasets, clips, snapshots)
    LICENSOR_CREATE = 3101, "licensor.create"
    LICENSE_CREATE = 3102, "license.create"
    LICENSE_WITHDRAW = 3103, "license.withdraw"
    DATASET_CREATE = 3111, "dataset.create"
    CLIP_ADD = 3112, "clip.add"
    DATASET_SNAPSHOT_FREEZE = 3121, "dataset_snapshot.freeze"
    DATASET_SNAPSHOT_WITHDRAW = 3122, "dataset_snapshot.withdraw"
    DATASET_SNAPSHOT_EXPORT = 3123, "dataset_snapshot.export"

    # 3300-3399 identity leakage checks (the gate on every generated output)
    LEAKAGE_REPORT_CREATE = 3301, "leakage_report.create"
    LEAKAGE_REPORT_RELEASE = 3302, "leakage_report.release"
    LEAKAGE_REPORT_REJECT = 3303, "leakage_report.reject"

    # 3400-3499 face identity (consent-bound face matching, thresholds per face backend)
    FACE_MATCH_RECORD = 3401, "face_match.record"
    FACE_MATCH_REJECT = 3402, "face_match.reject"
    FACE_THRESHOLD_POLICY_CREATE = 3411, "face_threshold_policy.create"
    FACE_THRESHOLD_POLICY_UPDATE = 3412, "face_threshold_policy.update"
    FACE_THRESHOLD_POLICY_LICENCE_SET = 3413, "face_threshold_policy.licence_set"

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
