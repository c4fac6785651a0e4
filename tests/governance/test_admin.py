"""The admin writes governance state only through the audited services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group

from governance.audit_codes import AuditAction
from governance.models import ApprovalPolicy, AuditEvent, Purpose
from governance.roles import Role
from tests.factories import UserFactory, create_policy

pytestmark = pytest.mark.django_db


@pytest.fixture
def officer(client):
    user = UserFactory(roles=[Role.COMPLIANCE_OFFICER], is_staff=True)
    client.force_login(user)
    return user


def test_a_compliance_officer_creates_and_edits_a_policy_through_the_service(client, officer):
    response = client.post(
        "/admin/governance/approvalpolicy/add/",
        {
            "name": "Marketing",
            "purpose": "marketing",
            "risk_level": "",
            "step_roles": "reviewer, compliance_officer",
            "approval_ttl": "48:00:00",
            "is_active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    policy = ApprovalPolicy.objects.get(name="Marketing")
    assert policy.step_roles == ["reviewer", "compliance_officer"]
    assert policy.approval_ttl == timedelta(hours=48)
    created = AuditEvent.objects.get(action=AuditAction.APPROVAL_POLICY_CREATE)
    assert (created.actor, created.target_id) == (officer, str(policy.pk))

    page = client.get(f"/admin/governance/approvalpolicy/{policy.pk}/change/")
    assert b'value="reviewer, compliance_officer"' in page.content
    response = client.post(
        f"/admin/governance/approvalpolicy/{policy.pk}/change/",
        {
            "name": "Marketing",
            "purpose": "marketing",
            "risk_level": "",
            "step_roles": "compliance_officer",
            "approval_ttl": "48:00:00",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    updated = AuditEvent.objects.get(action=AuditAction.APPROVAL_POLICY_UPDATE)
    assert updated.actor == officer
    assert updated.payload == {
        "changes": {
            "step_roles": {"old": ["reviewer", "compliance_officer"], "new": ["compliance_officer"]}
        }
    }
    # Policies are retired, never deleted.
    assert client.post(f"/admin/governance/approvalpolicy/{policy.pk}/delete/").status_code == 403


def test_a_bad_policy_is_shown_as_form_errors_and_nothing_is_saved(client, officer):
    create_policy(purpose="research", acting_user=officer)
    response = client.post(
        "/admin/governance/approvalpolicy/add/",
        {
            "name": "Second research policy",
            "purpose": "research",
            "risk_level": "",
            "step_roles": "reviewer, janitor",
            "approval_ttl": "1:00:00",
            "is_active": "on",
        },
    )
    assert response.status_code == 200
    assert "Unknown roles: janitor" in response.content.decode()
    assert ApprovalPolicy.objects.count() == 1


def test_other_roles_cannot_edit_policies(client):
    client.force_login(UserFactory(roles=[Role.REVIEWER], is_staff=True))
    assert client.get("/admin/governance/approvalpolicy/add/").status_code == 403


def test_vocabulary_edits_are_audited_and_codes_are_fixed(client, officer):
    response = client.post(
        "/admin/governance/purpose/research/change/",
        {
            "label": "Academic research",
            "description": "Non-commercial research and evaluation.",
            "risk_level": "low",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    purpose = Purpose.objects.get(pk="research")
    assert (purpose.label, purpose.is_active) == ("Academic research", False)
    event = AuditEvent.objects.get(action=AuditAction.VOCABULARY_UPDATE)
    assert event.target_type == "governance.purpose"
    assert event.payload == {
        "changes": {
            "label": {"old": "Research", "new": "Academic research"},
            "is_active": {"old": True, "new": False},
        }
    }
    response = client.post(
        "/admin/governance/channel/add/",
        {"code": "podcast", "label": "Podcasts", "is_active": "on"},
    )
    assert response.status_code == 302
    assert AuditEvent.objects.get(action=AuditAction.VOCABULARY_CREATE).payload == {
        "values": {"code": "podcast", "label": "Podcasts", "is_active": True}
    }


def test_role_changes_in_the_user_admin_go_through_the_role_services(client):
    admin_user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(admin_user)
    target = UserFactory(roles=[Role.REQUESTER])
    extra = Group.objects.create(name="newsletter")
    response = client.post(
        f"/admin/governance/user/{target.pk}/change/",
        {
            "username": target.username,
            "email": target.email,
            "is_active": "on",
            "groups": [Group.objects.get(name="reviewer").pk, extra.pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert target.role_names == ["reviewer"]
    assert set(target.groups.values_list("name", flat=True)) == {"reviewer", "newsletter"}
    events = AuditEvent.objects.filter(target_id=str(target.pk), actor=admin_user).order_by(
        "sequence"
    )
    assert [(e.action_name, e.payload) for e in events] == [
        ("role.grant", {"role": "reviewer"}),
        ("role.revoke", {"role": "requester"}),
    ]
