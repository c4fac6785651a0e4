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
# Licensed data and the model registry (governance.models.registry): data stewards manage it,
# compliance officers read it.
REGISTRY_READ_PERMISSIONS: frozenset[str] = frozenset(
    {
        "governance.view_licensor",
        "governance.view_license",
        "governance.view_dataset",
        "governance.view_clip",
        "governance.view_datasetsnapshot",
        "governance.view_modelversion",
    }
)
REGISTRY_WRITE_PERMISSIONS: frozenset[str] = frozenset(
    {
        "governance.add_licensor",
        "governance.add_license",
        "governance.withdraw_license",
        "governance.add_dataset",
        "governance.add_clip",
        "governance.add_datasetsnapshot",
        "governance.export_datasetsnapshot",
        "governance.add_modelversion",
        "governance.block_modelversion",
        "governance.deprecate_modelversion",
    }
)

JOB_READ_PERMISSIONS: frozenset[str] = frozenset(
    {"reenactment.view_renderjob", "reenactment.view_workerheartbeat"}
)

# Identity checks (governance.models.identity): reviewers read face matches and leakage reports
# (they weigh them in approvals); compliance officers also release or reject flagged outputs
# and set the thresholds per face backend.
IDENTITY_READ_PERMISSIONS: frozenset[str] = frozenset(
    {"governance.view_facematchrecord", "governance.view_leakagereport"}
)
IDENTITY_COMPLIANCE_PERMISSIONS: frozenset[str] = IDENTITY_READ_PERMISSIONS | frozenset(
    {
        "governance.review_leakagereport",
        "governance.view_facethresholdpolicy",
        "governance.change_facethresholdpolicy",
    }
)

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.REQUESTER: frozenset({"governance.view_person", "governance.view_consentrecord"}),
    Role.REVIEWER: frozenset(
        {
            "governance.view_person",
            "governance.download_person_evidence",
            "governance.view_consentrecord",
            "governance.download_consent_evidence",
        }
    )
    | IDENTITY_READ_PERMISSIONS,
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
    )
    | REGISTRY_READ_PERMISSIONS
    | IDENTITY_COMPLIANCE_PERMISSIONS
    | frozenset({"reenactment.withdraw_renderjob"})
    | JOB_READ_PERMISSIONS,
    Role.DATA_STEWARD: REGISTRY_READ_PERMISSIONS | REGISTRY_WRITE_PERMISSIONS,
    Role.OPERATOR: JOB_READ_PERMISSIONS,
}
# Render jobs (the reenactment app, named by string: governance never imports it). Requesters
# create jobs and see their own; reviewers see every job (they approve them); compliance
# officers and operators also see the worker pool, and compliance officers withdraw outputs.
ROLE_PERMISSIONS[Role.REQUESTER] |= frozenset(
    {
        "reenactment.add_renderjob",
        "reenactment.add_webhookendpoint",
        # Requesters pick the model version a job runs on.
        "governance.view_modelversion",
    }
)
ROLE_PERMISSIONS[Role.REVIEWER] |= frozenset({"reenactment.view_renderjob"})
