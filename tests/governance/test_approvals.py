"""Approval policies, requests and decisions through the services: separation of duties,
ordering, reasons, expiry, the hooks, and the inbox."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from guardian.shortcuts import get_groups_with_perms

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import (
    ApprovalClosed,
    ApprovalReleased,
    register_approval_closed_handler,
    register_approval_released_handler,
    unregister_approval_closed_handler,
    unregister_approval_released_handler,
)
from governance.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalStatus,
    AuditEvent,
    Purpose,
)
from governance.roles import Role
from governance.selectors.approvals import (
    ApprovalNotReleasedError,
    approval_inbox_list,
    approval_request_assert_released,
    approval_request_effective_status,
    approval_request_is_released,
    approval_request_is_visible_to,
)
from governance.services.approvals import (
    approval_decide,
    approval_policy_update,
    approval_request_cancel,
)
from governance.services.roles import object_permission_grant, object_permission_revoke, role_group
from tests.factories import UserFactory, create_approval_request, create_policy

pytestmark = pytest.mark.django_db


@pytest.fixture
def policy(compliance):
    return create_policy(purpose="research", acting_user=compliance)


@pytest.fixture
def released():
    seen: list[ApprovalReleased] = []
    uid = register_approval_released_handler(seen.append, uid="test.released")
    yield seen
    unregister_approval_released_handler(uid)


@pytest.fixture
def closed():
    seen: list[ApprovalClosed] = []
    uid = register_approval_closed_handler(seen.append, uid="test.closed")
    yield seen
    unregister_approval_closed_handler(uid)


def refused(exc_info, code: str, status: int) -> str:
    assert exc_info.value.code == code, exc_info.value.message
    assert exc_info.value.status_code == status
    return exc_info.value.message


# --- policies ---------------------------------------------------------------------------------


def test_policy_create_is_audited(compliance):
    policy = create_policy(purpose="marketing", acting_user=compliance)
    event = AuditEvent.objects.get(action=AuditAction.APPROVAL_POLICY_CREATE)
    assert (event.actor, event.target_id) == (compliance, str(policy.pk))
    assert event.payload == {
        "name": "policy marketing",
        "purpose": "marketing",
        "risk_level": "",
        "step_roles": ["reviewer", "compliance_officer"],
        "approval_ttl_seconds": 72 * 3600,
        "is_active": True,
    }


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"step_roles": []}, "step_roles", "A policy needs at least one step."),
        ({"step_roles": ["reviewer", "janitor"]}, "step_roles", "Unknown roles: janitor"),
        ({"risk_level": "high"}, "purpose", "one purpose or to one risk level, not both"),
        ({"approval_ttl": timedelta(seconds=5)}, "approval_ttl", "at least a minute"),
    ],
)
def test_policy_validation(compliance, kwargs, field, message):
    values = {"purpose": "research", "acting_user": compliance, **kwargs}
    with pytest.raises(ValidationError) as info:
        create_policy(**values)
    assert message in info.value.message_dict[field][0]
    assert not AuditEvent.objects.filter(action=AuditAction.APPROVAL_POLICY_CREATE).exists()


def test_only_one_active_policy_per_purpose(policy, compliance):
    with pytest.raises(ValidationError, match="already covers this purpose"):
        create_policy(purpose="research", name="second", acting_user=compliance)


def test_policy_update_audits_old_and_new_and_spares_requests_in_flight(policy, compliance):
    requester = UserFactory(roles=[Role.REQUESTER])
    in_flight = create_approval_request(requested_by=requester)
    approval_policy_update(
        policy=policy,
        name=policy.name,
        step_roles=["compliance_officer"],
        purpose=policy.purpose,
        risk_level="",
        approval_ttl=timedelta(hours=1),
        is_active=True,
        acting_user=compliance,
    )
    event = AuditEvent.objects.get(action=AuditAction.APPROVAL_POLICY_UPDATE)
    assert event.payload == {
        "changes": {
            "step_roles": {
                "old": ["reviewer", "compliance_officer"],
                "new": ["compliance_officer"],
            },
            "approval_ttl_seconds": {"old": 72 * 3600, "new": 3600},
        }
    }
    assert [s.role for s in in_flight.steps.all()] == ["reviewer", "compliance_officer"]
    assert in_flight.approval_ttl == timedelta(hours=72)
    fresh = create_approval_request(requested_by=requester)
    assert [s.role for s in fresh.steps.all()] == ["compliance_officer"]
    # Saving the same values records nothing.
    approval_policy_update(
        policy=policy,
        name=policy.name,
        step_roles=["compliance_officer"],
        purpose=policy.purpose,
        risk_level="",
        approval_ttl=timedelta(hours=1),
        is_active=True,
        acting_user=compliance,
    )
    assert AuditEvent.objects.filter(action=AuditAction.APPROVAL_POLICY_UPDATE).count() == 1


# --- requests ---------------------------------------------------------------------------------


def test_request_create_copies_the_steps_and_grants_each_to_its_role(policy, requester):
    approval_request = create_approval_request(
        requested_by=requester, subject_id=42, summary="Training clip"
    )
    steps = list(approval_request.steps.order_by("order"))
    assert [(s.order, s.role) for s in steps] == [(1, "reviewer"), (2, "compliance_officer")]
    assert approval_request.status == ApprovalStatus.PENDING
    assert approval_request.purpose_id == "research"
    for step in steps:
        groups = get_groups_with_perms(step, attach_perms=True)
        assert {g.name: perms for g, perms in groups.items()} == {
            step.role: ["decide_approvalstep"]
        }
    created = AuditEvent.objects.get(action=AuditAction.APPROVAL_REQUEST_CREATE)
    assert created.actor == requester
    assert created.payload["subject_id"] == "42"
    assert created.payload["steps"] == [
        {"id": steps[0].pk, "order": 1, "role": "reviewer"},
        {"id": steps[1].pk, "order": 2, "role": "compliance_officer"},
    ]
    grants = AuditEvent.objects.filter(action=AuditAction.PERMISSION_GRANT).order_by("sequence")
    assert [(g.target_id, g.payload["grantee"]) for g in grants] == [
        (str(steps[0].pk), "reviewer"),
        (str(steps[1].pk), "compliance_officer"),
    ]


def test_the_risk_level_policy_applies_when_the_purpose_has_none(compliance, requester):
    create_policy(risk_level="low", step_roles=[Role.REVIEWER], acting_user=compliance)
    assert Purpose.objects.get(pk="internal_training_video").risk_level == "low"
    approval_request = create_approval_request(
        requested_by=requester, purpose="internal_training_video"
    )
    assert [s.role for s in approval_request.steps.all()] == ["reviewer"]


def test_request_without_a_policy_or_twice_pending_is_refused(policy, requester):
    with pytest.raises(ApplicationError) as info:
        create_approval_request(requested_by=requester, purpose="marketing")
    assert "No active approval policy covers the purpose marketing" in refused(
        info, "no_approval_policy", 409
    )
    create_approval_request(requested_by=requester, subject_id="job-1")
    with pytest.raises(ApplicationError) as info:
        create_approval_request(requested_by=requester, subject_id="job-1")
    refused(info, "approval_request_pending", 409)
    with pytest.raises(ValidationError, match="model label"):
        create_approval_request(requested_by=requester, subject_type="RenderJob")
    assert ApprovalRequest.objects.count() == 1


def test_request_create_composes_inside_a_callers_transaction(policy, requester):
    """The jobs side calls it inside render_job_submit's transaction: no durable block."""
    with transaction.atomic():
        approval_request = create_approval_request(requested_by=requester)
        assert connection.in_atomic_block
    assert ApprovalRequest.objects.filter(pk=approval_request.pk).exists()


# --- decisions --------------------------------------------------------------------------------


def test_two_approvals_release_the_request_and_run_the_released_hook(
    policy, requester, reviewer, compliance, released
):
    approval_request = create_approval_request(requested_by=requester, subject_id=7)
    first, second = approval_request.steps.order_by("order")

    approval_decide(step=first, verdict="approve", acting_user=reviewer)
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalStatus.PENDING
    assert approval_request.expires_at is not None
    assert not approval_request_is_released(approval_request=approval_request)
    assert released == []

    approval_decide(step=second, verdict="approve", reason="fine", acting_user=compliance)
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalStatus.APPROVED
    assert approval_request_is_released(approval_request=approval_request)
    approval_request_assert_released(approval_request=approval_request)
    assert released == [
        ApprovalReleased(
            request_id=approval_request.pk,
            subject_type="reenactment.renderjob",
            subject_id="7",
            acting_user_id=compliance.pk,
            approved_at=approval_request.approved_at,
            expires_at=approval_request.expires_at,
        )
    ]
    actions = list(
        AuditEvent.objects.filter(target_type="governance.approvalrequest")
        .order_by("sequence")
        .values_list("action", "actor")
    )
    assert actions == [
        (AuditAction.APPROVAL_REQUEST_CREATE, requester.pk),
        (AuditAction.APPROVAL_STEP_DECIDE, reviewer.pk),
        (AuditAction.APPROVAL_STEP_DECIDE, compliance.pk),
        (AuditAction.APPROVAL_REQUEST_APPROVE, compliance.pk),
    ]


def test_the_requester_can_never_decide_their_own_request(policy):
    both = UserFactory(roles=[Role.REQUESTER, Role.REVIEWER, Role.COMPLIANCE_OFFICER])
    approval_request = create_approval_request(requested_by=both)
    step = approval_request.steps.get(order=1)
    with pytest.raises(ApplicationError) as info:
        approval_decide(step=step, verdict="approve", acting_user=both)
    assert refused(info, "approval_requester_cannot_decide", 403) == (
        "You requested this approval; someone else must decide it."
    )
    assert not ApprovalDecision.objects.exists()


def test_one_person_cannot_decide_two_steps(policy, requester):
    double = UserFactory(roles=[Role.REVIEWER, Role.COMPLIANCE_OFFICER])
    approval_request = create_approval_request(requested_by=requester)
    first, second = approval_request.steps.order_by("order")
    approval_decide(step=first, verdict="approve", acting_user=double)
    with pytest.raises(ApplicationError) as info:
        approval_decide(step=second, verdict="approve", acting_user=double)
    refused(info, "approval_one_decision_per_person", 403)
    # The database refuses it too, whoever writes the row.
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalDecision.objects.create(
            step=second,
            request=approval_request,
            decided_by=double,
            verdict="approve",
            decided_at=timezone.now(),
        )


def test_only_holders_of_the_role_with_the_object_permission_decide(policy, requester, compliance):
    approval_request = create_approval_request(requested_by=requester)
    step = approval_request.steps.get(order=1)
    outsider = UserFactory(roles=[Role.DATA_STEWARD])
    superuser = UserFactory(is_superuser=True)
    for user in (outsider, compliance, superuser):
        with pytest.raises(ApplicationError) as info:
            approval_decide(step=step, verdict="approve", acting_user=user)
        assert refused(info, "approval_not_a_decider", 403) == (
            f"Step 1 of request #{approval_request.pk} is decided by a reviewer holding the "
            "permission to decide it; you are not one."
        )

    # A compliance officer narrows the step to one named reviewer.
    chosen, other = UserFactory(roles=[Role.REVIEWER]), UserFactory(roles=[Role.REVIEWER])
    object_permission_revoke(
        perm="governance.decide_approvalstep",
        obj=step,
        grantee=role_group(Role.REVIEWER),
        acting_user=compliance,
    )
    object_permission_grant(
        perm="governance.decide_approvalstep", obj=step, grantee=chosen, acting_user=compliance
    )
    with pytest.raises(ApplicationError) as info:
        approval_decide(step=step, verdict="approve", acting_user=other)
    refused(info, "approval_not_a_decider", 403)
    approval_decide(step=step, verdict="approve", acting_user=chosen)
    revoke_event = AuditEvent.objects.get(action=AuditAction.PERMISSION_REVOKE)
    assert revoke_event.payload == {
        "permission": "governance.decide_approvalstep",
        "grantee_type": "group",
        "grantee_id": role_group(Role.REVIEWER).pk,
        "grantee": "reviewer",
    }


def test_steps_are_decided_in_order_and_once(policy, requester, reviewer, compliance):
    approval_request = create_approval_request(requested_by=requester)
    first, second = approval_request.steps.order_by("order")
    with pytest.raises(ApplicationError) as info:
        approval_decide(step=second, verdict="approve", acting_user=compliance)
    assert refused(info, "approval_step_not_current", 409) == (
        f"Step 2 of request #{approval_request.pk} waits for step 1 first."
    )
    approval_decide(step=first, verdict="approve", acting_user=reviewer)
    again = UserFactory(roles=[Role.REVIEWER])
    with pytest.raises(ApplicationError) as info:
        approval_decide(step=first, verdict="reject", reason="no", acting_user=again)
    assert refused(info, "approval_step_already_decided", 409) == (
        f"Step 1 of request #{approval_request.pk} was already decided (approve)."
    )


@pytest.mark.parametrize(
    ("verdict", "status", "action"),
    [
        ("reject", ApprovalStatus.REJECTED, AuditAction.APPROVAL_REQUEST_REJECT),
        (
            "request_changes",
            ApprovalStatus.CHANGES_REQUESTED,
            AuditAction.APPROVAL_REQUEST_REQUEST_CHANGES,
        ),
    ],
)
def test_reject_and_request_changes_need_a_reason_and_end_the_request(
    policy, requester, reviewer, compliance, closed, verdict, status, action
):
    approval_request = create_approval_request(requested_by=requester)
    first, second = approval_request.steps.order_by("order")
    with pytest.raises(ValidationError) as info:
        approval_decide(step=first, verdict=verdict, reason="  ", acting_user=reviewer)
    assert info.value.message_dict == {
        "reason": ["A reason is required to reject or to request changes."]
    }
    assert not ApprovalDecision.objects.exists()

    approval_decide(step=first, verdict=verdict, reason="Wrong territory", acting_user=reviewer)
    approval_request.refresh_from_db()
    assert approval_request.status == status
    assert approval_request.close_reason == "Wrong territory"
    assert AuditEvent.objects.get(action=action).payload == {
        "status": status.value,
        "reason": "Wrong territory",
    }
    assert [(c.request_id, c.status, c.reason) for c in closed] == [
        (approval_request.pk, status.value, "Wrong territory")
    ]
    with pytest.raises(ApplicationError) as exc:
        approval_decide(step=second, verdict="approve", acting_user=compliance)
    refused(exc, "approval_request_closed", 409)
    with pytest.raises(ApprovalNotReleasedError) as not_released:
        approval_request_assert_released(approval_request=approval_request)
    assert not_released.value.extra["status"] == status.value


def test_an_unknown_verdict_is_refused(policy, requester, reviewer):
    step = create_approval_request(requested_by=requester).steps.get(order=1)
    with pytest.raises(ValidationError, match="Decide with one of approve, reject"):
        approval_decide(step=step, verdict="maybe", acting_user=reviewer)


def test_a_stale_approval_neither_releases_nor_takes_more_decisions(
    compliance, requester, reviewer
):
    create_policy(purpose="research", approval_ttl=timedelta(hours=2), acting_user=compliance)
    approval_request = create_approval_request(requested_by=requester)
    first, second = approval_request.steps.order_by("order")
    before = timezone.now()
    approval_decide(step=first, verdict="approve", acting_user=reviewer)
    approval_request.refresh_from_db()
    expires_at = approval_request.expires_at
    assert before + timedelta(hours=2) <= expires_at <= timezone.now() + timedelta(hours=2)

    later = UserFactory(roles=[Role.COMPLIANCE_OFFICER])
    approval_decide(step=second, verdict="approve", acting_user=later)
    approval_request.refresh_from_db()
    assert approval_request.expires_at == expires_at  # counted from the first approval
    assert approval_request_is_released(
        approval_request=approval_request, at=expires_at - timedelta(seconds=1)
    )
    assert not approval_request_is_released(approval_request=approval_request, at=expires_at)
    assert approval_request_effective_status(approval_request, expires_at) == "expired"
    with pytest.raises(ApprovalNotReleasedError) as info:
        approval_request_assert_released(approval_request=approval_request, at=expires_at)
    assert info.value.code == "approval_not_released"
    assert info.value.message == (
        f"The approval of request #{approval_request.pk} expired at {expires_at.isoformat()}; "
        "request a new approval."
    )

    # A pending request whose first approval has gone stale takes no further decision. (The
    # clock is moved by moving the expiry into the past.)
    pending = create_approval_request(requested_by=requester)
    p_first, p_second = pending.steps.order_by("order")
    approval_decide(step=p_first, verdict="approve", acting_user=reviewer)
    ApprovalRequest.objects.filter(pk=pending.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(ApplicationError) as exc:
        approval_decide(step=p_second, verdict="approve", acting_user=compliance)
    assert "it has to be requested again" in refused(exc, "approval_expired", 409)
    assert not approval_inbox_list(user=compliance).exists()


def test_cancel_withdraws_a_pending_or_approved_request(
    policy, requester, reviewer, compliance, closed
):
    approval_request = create_approval_request(requested_by=requester)
    first, second = approval_request.steps.order_by("order")
    approval_decide(step=first, verdict="approve", acting_user=reviewer)
    approval_decide(step=second, verdict="approve", acting_user=compliance)
    approval_request_cancel(
        approval_request=approval_request, reason="Consent revoked", acting_user=None
    )
    approval_request.refresh_from_db()
    assert approval_request.status == ApprovalStatus.CANCELLED
    assert not approval_request_is_released(approval_request=approval_request)
    assert closed[0].status == "cancelled"
    assert closed[0].acting_user_id is None
    event = AuditEvent.objects.get(action=AuditAction.APPROVAL_REQUEST_CANCEL)
    assert event.actor is None
    with pytest.raises(ApplicationError) as info:
        approval_request_cancel(approval_request=approval_request, reason="x", acting_user=None)
    refused(info, "approval_request_closed", 409)


# --- inbox and visibility ---------------------------------------------------------------------


def test_inbox_shows_each_decider_only_their_current_steps(policy, requester, reviewer, compliance):
    double = UserFactory(roles=[Role.REVIEWER, Role.COMPLIANCE_OFFICER])
    one = create_approval_request(requested_by=requester, subject_id=1)
    two = create_approval_request(requested_by=double, subject_id=2)

    assert [(s.request_id, s.order) for s in approval_inbox_list(user=reviewer)] == [
        (one.pk, 1),
        (two.pk, 1),
    ]
    assert list(approval_inbox_list(user=compliance)) == []  # step 2 waits for step 1
    assert list(approval_inbox_list(user=requester)) == []
    # Never one's own request.
    assert [(s.request_id, s.order) for s in approval_inbox_list(user=double)] == [(one.pk, 1)]

    approval_decide(step=one.steps.get(order=1), verdict="approve", acting_user=double)
    assert [(s.request_id, s.order) for s in approval_inbox_list(user=reviewer)] == [(two.pk, 1)]
    assert [(s.request_id, s.order) for s in approval_inbox_list(user=compliance)] == [(one.pk, 2)]
    # double decided step 1 of `one`, so step 2 is not theirs to decide.
    assert list(approval_inbox_list(user=double)) == []


def test_visibility_of_a_request(policy, requester, reviewer, compliance, users):
    approval_request = create_approval_request(requested_by=requester)
    visible = {
        name: approval_request_is_visible_to(user=user, approval_request=approval_request)
        for name, user in users.items()
    }
    assert visible == {
        "requester": True,
        "reviewer": True,
        "compliance_officer": True,
        "data_steward": False,
        "operator": False,
    }
    other_requester = UserFactory(roles=[Role.REQUESTER])
    assert not approval_request_is_visible_to(
        user=other_requester, approval_request=approval_request
    )


def test_a_released_handler_dispatches_only_after_commit(
    policy, requester, reviewer, compliance, django_capture_on_commit_callbacks
):
    """How the jobs side dispatches: the handler runs inside the deciding transaction and
    defers the Celery call with on_commit, so a rolled-back approval dispatches nothing."""
    dispatched: list[str] = []

    def dispatch_on_commit(event: ApprovalReleased) -> None:
        transaction.on_commit(lambda: dispatched.append(event.subject_id))

    uid = register_approval_released_handler(dispatch_on_commit)
    try:
        approval_request = create_approval_request(requested_by=requester, subject_id=5)
        first, second = approval_request.steps.order_by("order")
        approval_decide(step=first, verdict="approve", acting_user=reviewer)
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            approval_decide(step=second, verdict="approve", acting_user=compliance)
            assert dispatched == []
        assert len(callbacks) == 1
        assert dispatched == ["5"]
    finally:
        unregister_approval_released_handler(uid)
