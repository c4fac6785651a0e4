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

# Model-level ("global") permissions each role's group holds, as "app_label.codename". They
# are (re)applied after every migrate by governance.services.roles.role_permissions_sync, which
# only adds: permissions given to a group by hand stay. Per-object rights (deciding one
# approval step, reading one consent) are guardian grants, made through the audited services
# in governance.services.roles. Other apps add their permissions here.
ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.REQUESTER: frozenset({"governance.view_person", "governance.view_consentrecord"}),
    Role.REVIEWER: frozenset(
        {
            "governance.view_person",
            "governance.download_person_evidence",
            "governance.view_consentrecord",
            "governance.download_consent_evidence",
        }
    ),
    Role.COMPLIANCE_OFFICER: frozenset(
        {
            "governance.add_person",
            "governance.view_person",
            "governance.download_person_evidence",
            "governance.add_consentrecord",
            "governance.view_consentrecord",
            "governance.supersede_consentrecord",
            "governance.revoke_consentrecord",
            "governance.download_consent_evidence",
            "governance.view_evidencefile",
            "governance.view_approvalrequest",
            "governance.view_approvalpolicy",
            "governance.add_approvalpolicy",
            "governance.change_approvalpolicy",
            "governance.view_auditevent",
            "governance.export_auditevent",
            "governance.view_purpose",
            "governance.add_purpose",
            "governance.change_purpose",
            "governance.view_channel",
            "governance.add_channel",
            "governance.change_channel",
            "governance.view_territory",
            "governance.add_territory",
            "governance.change_territory",
        }
    ),
    Role.DATA_STEWARD: frozenset(),
    Role.OPERATOR: frozenset(),
}
