"""The platform's roles. Each is a Django group, created by a data migration.

Per-object rights (who may decide which approval step, read which consent) are django-guardian
grants on top of these groups.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    REQUESTER = "requester"
    REVIEWER = "reviewer"
    COMPLIANCE_OFFICER = "compliance_officer"
    DATA_STEWARD = "data_steward"
    OPERATOR = "operator"


ROLE_DESCRIPTIONS: dict[Role, str] = {
    Role.REQUESTER: "Submits render jobs for a purpose and distribution channels.",
    Role.REVIEWER: "Decides first-line approval steps.",
    Role.COMPLIANCE_OFFICER: (
        "Decides compliance approval steps, reviews audit trails, releases or rejects flagged "
        "outputs."
    ),
    Role.DATA_STEWARD: "Manages licensed training data, dataset snapshots and the model registry.",
    Role.OPERATOR: "Runs the GPU worker pool and watches its health.",
}
