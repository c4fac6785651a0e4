"""Approval policies, requests and decisions.

Every function here is composable (plain ``@transaction.atomic``): the admin calls the policy
services inside its own transaction, and the jobs side calls ``approval_request_create`` inside
``render_job_submit`` and ``approval_decide`` inside its approve action. On final approval the
``governance.hooks`` released-handlers run inside the same transaction (the jobs side
dispatches with ``delay_on_commit``); before acting on an approval, call
``approval_request_assert_released`` (it accounts for expiry).

Separation of duties is enforced here, not only in the API: whoever requested (or created) a
request never decides any of its steps; one person decides at most one step of a request (the
database refuses a second decision too); only a holder of the step's role who also holds the
object permission ``governance.decide_approvalstep`` on the step may decide it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import (
    ApprovalClosed,
    ApprovalReleased,
    approval_closed_handlers,
    approval_released_handlers,
)
from governance.models import (
    DEFAULT_APPROVAL_TTL,
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalStatus,
    ApprovalStep,
    ApprovalVerdict,
    Purpose,
    RiskLevel,
    User,
)
from governance.roles import Role
from governance.selectors.approvals import (
    DECIDE_PERMISSION,
    approval_policy_for_purpose,
    user_may_decide_step,
)
from governance.services.audit import audit_event_record
from governance.services.roles import object_permission_grant, role_group

MIN_APPROVAL_TTL = timedelta(minutes=1)
_SUBJECT_TYPE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")

APPROVAL_REQUESTER_CANNOT_DECIDE = "You requested this approval; someone else must decide it."
APPROVAL_ONE_DECISION_PER_PERSON = (
    "You already decided another step of this request; a different person must decide this one."
)
APPROVAL_NOT_A_DECIDER = (
    "Step {order} of request #{request} is decided by a {role} holding the permission to decide "
    "it; you are not one."
)
APPROVAL_STEP_ALREADY_DECIDED = (
    "Step {order} of request #{request} was already decided ({verdict})."
)
APPROVAL_REQUEST_CLOSED = "Request #{request} is {status}; it takes no more decisions."
APPROVAL_STEP_NOT_CURRENT = "Step {order} of request #{request} waits for step {earlier} first."
APPROVAL_EXPIRED = (
    "The approvals of request #{request} expired at {expires_at}; it has to be requested again."
)
APPROVAL_REASON_REQUIRED = "A reason is required to reject or to request changes."


def _forbidden(message: str, code: str) -> ApplicationError:
    return ApplicationError(message, code=code, status_code=status.HTTP_403_FORBIDDEN)


def _conflict(message: str, code: str) -> ApplicationError:
    return ApplicationError(message, code=code, status_code=status.HTTP_409_CONFLICT)


# --- policies ---------------------------------------------------------------------------------


def approval_policy_validate(
    *,
    policy_id: int | None,
    name: str,
    purpose: Purpose | None,
    risk_level: str,
    step_roles: Sequence[str],
    approval_ttl: timedelta,
    is_active: bool,
) -> list[str]:
    """Check a policy's values (also used by the admin form); returns the cleaned roles."""
    errors: dict[str, str] = {}
    others = ApprovalPolicy.objects.all()
    if policy_id is not None:
        others = others.exclude(pk=policy_id)
    if not name.strip():
        errors["name"] = "A name is required."
    elif others.filter(name=name.strip()).exists():
        errors["name"] = f"A policy named {name.strip()!r} exists already."
    if (purpose is None) == (not risk_level):
        errors["purpose"] = "A policy applies to one purpose or to one risk level, not both."
    if risk_level and risk_level not in RiskLevel.values:
        errors["risk_level"] = f"Risk level must be one of {', '.join(RiskLevel.values)}."
    roles = [str(role).strip() for role in step_roles]
    unknown = [role for role in roles if role not in {r.value for r in Role}]
    if not roles:
        errors["step_roles"] = "A policy needs at least one step."
    elif unknown:
        errors["step_roles"] = (
            f"Unknown roles: {', '.join(unknown)} (roles: {', '.join(r.value for r in Role)})."
        )
    if approval_ttl < MIN_APPROVAL_TTL:
        errors["approval_ttl"] = "Approvals must stay valid for at least a minute."
    if is_active and not errors:
        clash = others.filter(is_active=True)
        clash = clash.filter(purpose=purpose) if purpose else clash.filter(risk_level=risk_level)
        if clash.exists():
            errors["is_active"] = (
                f"The active policy {clash.first()} already covers this "
                f"{'purpose' if purpose else 'risk level'}; retire it first."
            )
    if errors:
        raise ValidationError(errors)
    return roles


def _policy_state(policy: ApprovalPolicy) -> dict[str, object]:
    return {
        "name": policy.name,
        "purpose": policy.purpose_id,
        "risk_level": policy.risk_level,
        "step_roles": list(policy.step_roles),
        "approval_ttl_seconds": int(policy.approval_ttl.total_seconds()),
        "is_active": policy.is_active,
    }


@transaction.atomic
def approval_policy_create(
    *,
    name: str,
    step_roles: Sequence[str],
    purpose: Purpose | None = None,
    risk_level: str = "",
    approval_ttl: timedelta = DEFAULT_APPROVAL_TTL,
    is_active: bool = True,
    acting_user: User | None,
) -> ApprovalPolicy:
    roles = approval_policy_validate(
        policy_id=None,
        name=name,
        purpose=purpose,
        risk_level=risk_level,
        step_roles=step_roles,
        approval_ttl=approval_ttl,
        is_active=is_active,
    )
    now = timezone.now()
    policy = ApprovalPolicy.objects.create(
        name=name.strip(),
        purpose=purpose,
        risk_level=risk_level,
        step_roles=roles,
        approval_ttl=approval_ttl,
        is_active=is_active,
        created_at=now,
        updated_at=now,
    )
    audit_event_record(
        actor=acting_user,
        action=AuditAction.APPROVAL_POLICY_CREATE,
        target_type="governance.approvalpolicy",
        target_id=policy.pk,
        payload=_policy_state(policy),
    )
    return policy


@transaction.atomic
def approval_policy_update(
    *,
    policy: ApprovalPolicy,
    name: str,
    step_roles: Sequence[str],
    purpose: Purpose | None,
    risk_level: str,
    approval_ttl: timedelta,
    is_active: bool,
    acting_user: User | None,
) -> ApprovalPolicy:
    """Change a policy; the audit event carries the old and new values of what changed.
    Requests already created keep the steps and TTL they were created with."""
    before = ApprovalPolicy.objects.select_for_update().get(pk=policy.pk)
    roles = approval_policy_validate(
        policy_id=policy.pk,
        name=name,
        purpose=purpose,
        risk_level=risk_level,
        step_roles=step_roles,
        approval_ttl=approval_ttl,
        is_active=is_active,
    )
    old = _policy_state(before)
    policy.name = name.strip()
    policy.purpose = purpose
    policy.risk_level = risk_level
    policy.step_roles = roles
    policy.approval_ttl = approval_ttl
    policy.is_active = is_active
    new = _policy_state(policy)
    changes = {key: {"old": old[key], "new": new[key]} for key in new if old[key] != new[key]}
    if not changes:
        policy.refresh_from_db()
        return policy
    policy.updated_at = timezone.now()
    policy.save()
    audit_event_record(
        actor=acting_user,
        action=AuditAction.APPROVAL_POLICY_UPDATE,
        target_type="governance.approvalpolicy",
        target_id=policy.pk,
        payload={"changes": changes},
    )
    return policy


# --- requests ---------------------------------------------------------------------------------


@transaction.atomic
def approval_request_create(
    *,
    subject_type: str,
    subject_id: int | str,
    requested_by: User,
    acting_user: User | None,
    purpose: Purpose | str | None = None,
    policy: ApprovalPolicy | None = None,
    summary: str = "",
) -> ApprovalRequest:
    """Open an approval request for one subject (e.g. ``"reenactment.renderjob"``, job id).

    Give ``purpose`` (its policy, or its risk level's, applies) or an explicit ``policy``. The
    steps copy the policy's roles; each step's decide permission is granted to its role's group
    (audited). A subject has at most one pending request at a time.
    """
    if (purpose is None) == (policy is None):
        raise ValueError("Give either purpose or policy.")
    if not _SUBJECT_TYPE.match(subject_type):
        raise ValidationError({"subject_type": "Use a model label such as reenactment.renderjob."})
    subject_key = str(subject_id)
    if not subject_key or len(subject_key) > 64:
        raise ValidationError({"subject_id": "A subject id of at most 64 characters is required."})
    purpose_row: Purpose | None = None
    if purpose is not None:
        purpose_row = (
            purpose if isinstance(purpose, Purpose) else Purpose.objects.filter(pk=purpose).first()
        )
        if purpose_row is None or not purpose_row.is_active:
            raise ValidationError({"purpose": f"Unknown or retired purpose {purpose}."})
        policy = approval_policy_for_purpose(purpose=purpose_row)
        if policy is None:
            raise _conflict(
                f"No active approval policy covers the purpose {purpose_row.pk} (nor its risk "
                f"level {purpose_row.risk_level}); a compliance officer must define one.",
                "no_approval_policy",
            )
    assert policy is not None
    if not policy.is_active:
        raise _conflict(f"The approval policy {policy} is retired.", "approval_policy_retired")
    if ApprovalRequest.objects.filter(
        subject_type=subject_type, subject_id=subject_key, status=ApprovalStatus.PENDING
    ).exists():
        raise _conflict(
            f"{subject_type}:{subject_key} already has a pending approval request.",
            "approval_request_pending",
        )
    approval_request = ApprovalRequest.objects.create(
        policy=policy,
        purpose=purpose_row,
        approval_ttl=policy.approval_ttl,
        subject_type=subject_type,
        subject_id=subject_key,
        summary=summary.strip()[:300],
        requested_by=requested_by,
        created_by=acting_user,
        created_at=timezone.now(),
    )
    steps = ApprovalStep.objects.bulk_create(
        ApprovalStep(request=approval_request, order=order, role=role)
        for order, role in enumerate(policy.step_roles, start=1)
    )
    audit_event_record(
        actor=acting_user,
        action=AuditAction.APPROVAL_REQUEST_CREATE,
        target_type="governance.approvalrequest",
        target_id=approval_request.pk,
        payload={
            "subject_type": subject_type,
            "subject_id": subject_key,
            "requested_by": requested_by.pk,
            "policy_id": policy.pk,
            "purpose": purpose_row.pk if purpose_row else None,
            "steps": [{"id": step.pk, "order": step.order, "role": step.role} for step in steps],
            "approval_ttl_seconds": int(policy.approval_ttl.total_seconds()),
        },
    )
    for step in steps:
        object_permission_grant(
            perm=DECIDE_PERMISSION,
            obj=step,
            grantee=role_group(Role(step.role)),
            acting_user=acting_user,
        )
    return approval_request


def _close(
    approval_request: ApprovalRequest,
    *,
    new_status: ApprovalStatus,
    reason: str,
    acting_user: User | None,
    action: AuditAction,
) -> None:
    now = timezone.now()
    approval_request.status = new_status
    approval_request.closed_at = now
    approval_request.closed_by = acting_user
    approval_request.close_reason = reason
    approval_request.save(update_fields=["status", "closed_at", "closed_by", "close_reason"])
    audit_event_record(
        actor=acting_user,
        action=action,
        target_type="governance.approvalrequest",
        target_id=approval_request.pk,
        payload={"status": new_status.value, "reason": reason},
    )
    approval_closed_handlers.dispatch(
        ApprovalClosed(
            request_id=approval_request.pk,
            subject_type=approval_request.subject_type,
            subject_id=approval_request.subject_id,
            status=new_status.value,
            acting_user_id=acting_user.pk if acting_user else None,
            reason=reason,
            closed_at=now,
        )
    )


@transaction.atomic
def approval_decide(
    *, step: ApprovalStep, verdict: str, reason: str = "", acting_user: User
) -> ApprovalDecision:
    """Decide one step: approve, reject or request changes (the last two need a reason).

    Rejecting or requesting changes ends the request. Approving the last step approves it and
    runs the released-handlers; the approval then holds until ``expires_at`` (first approving
    decision + the policy's TTL). Refusals, checked in this order: 400 bad verdict/missing
    reason; 403 requester, not a decider, second decision by the same person; 409 step already
    decided, request closed, an earlier step still open, approvals expired.
    """
    reason = reason.strip()
    if verdict not in ApprovalVerdict.values:
        raise ValidationError(
            {"verdict": f"Decide with one of {', '.join(ApprovalVerdict.values)}."}
        )
    if verdict != ApprovalVerdict.APPROVE and not reason:
        raise ValidationError({"reason": APPROVAL_REASON_REQUIRED})
    # One decision at a time per request: the row lock serializes concurrent deciders.
    approval_request = ApprovalRequest.objects.select_for_update().get(pk=step.request_id)
    step = ApprovalStep.objects.get(pk=step.pk)
    names = {"order": step.order, "request": approval_request.pk, "role": step.role}
    if acting_user.pk in (approval_request.requested_by_id, approval_request.created_by_id):
        raise _forbidden(APPROVAL_REQUESTER_CANNOT_DECIDE, "approval_requester_cannot_decide")
    if not user_may_decide_step(user=acting_user, step=step):
        raise _forbidden(APPROVAL_NOT_A_DECIDER.format(**names), "approval_not_a_decider")
    existing = ApprovalDecision.objects.filter(step=step).first()
    if existing is not None:
        raise _conflict(
            APPROVAL_STEP_ALREADY_DECIDED.format(**names, verdict=existing.verdict),
            "approval_step_already_decided",
        )
    if approval_request.status != ApprovalStatus.PENDING:
        raise _conflict(
            APPROVAL_REQUEST_CLOSED.format(**names, status=approval_request.status),
            "approval_request_closed",
        )
    if ApprovalDecision.objects.filter(request=approval_request, decided_by=acting_user).exists():
        raise _forbidden(APPROVAL_ONE_DECISION_PER_PERSON, "approval_one_decision_per_person")
    earlier = (
        approval_request.steps.filter(order__lt=step.order, decision__isnull=True)
        .order_by("order")
        .first()
    )
    if earlier is not None:
        raise _conflict(
            APPROVAL_STEP_NOT_CURRENT.format(**names, earlier=earlier.order),
            "approval_step_not_current",
        )
    now = timezone.now()
    if approval_request.expires_at is not None and approval_request.expires_at <= now:
        raise _conflict(
            APPROVAL_EXPIRED.format(**names, expires_at=approval_request.expires_at.isoformat()),
            "approval_expired",
        )

    decision = ApprovalDecision.objects.create(
        step=step,
        request=approval_request,
        decided_by=acting_user,
        verdict=verdict,
        reason=reason,
        decided_at=now,
    )
    audit_event_record(
        actor=acting_user,
        action=AuditAction.APPROVAL_STEP_DECIDE,
        target_type="governance.approvalrequest",
        target_id=approval_request.pk,
        payload={
            "step_id": step.pk,
            "step_order": step.order,
            "role": step.role,
            "verdict": verdict,
            "reason": reason,
        },
    )
    if verdict == ApprovalVerdict.REJECT:
        _close(
            approval_request,
            new_status=ApprovalStatus.REJECTED,
            reason=reason,
            acting_user=acting_user,
            action=AuditAction.APPROVAL_REQUEST_REJECT,
        )
        return decision
    if verdict == ApprovalVerdict.REQUEST_CHANGES:
        _close(
            approval_request,
            new_status=ApprovalStatus.CHANGES_REQUESTED,
            reason=reason,
            acting_user=acting_user,
            action=AuditAction.APPROVAL_REQUEST_REQUEST_CHANGES,
        )
        return decision

    if approval_request.expires_at is None:
        approval_request.expires_at = now + approval_request.approval_ttl
    if approval_request.steps.filter(decision__isnull=True).exists():
        approval_request.save(update_fields=["expires_at"])
        return decision
    approval_request.status = ApprovalStatus.APPROVED
    approval_request.approved_at = now
    approval_request.save(update_fields=["status", "approved_at", "expires_at"])
    audit_event_record(
        actor=acting_user,
        action=AuditAction.APPROVAL_REQUEST_APPROVE,
        target_type="governance.approvalrequest",
        target_id=approval_request.pk,
        payload={"expires_at": approval_request.expires_at},
    )
    approval_released_handlers.dispatch(
        ApprovalReleased(
            request_id=approval_request.pk,
            subject_type=approval_request.subject_type,
            subject_id=approval_request.subject_id,
            acting_user_id=acting_user.pk,
            approved_at=now,
            expires_at=approval_request.expires_at,
        )
    )
    return decision


@transaction.atomic
def approval_request_cancel(
    *, approval_request: ApprovalRequest, reason: str, acting_user: User | None
) -> ApprovalRequest:
    """Withdraw a pending or approved request (e.g. its job was cancelled, or a consent it
    relied on was revoked): it can no longer be decided nor release anything."""
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Give the reason for the cancellation."})
    locked = ApprovalRequest.objects.select_for_update().get(pk=approval_request.pk)
    if locked.status not in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED):
        raise _conflict(
            APPROVAL_REQUEST_CLOSED.format(request=locked.pk, status=locked.status),
            "approval_request_closed",
        )
    _close(
        locked,
        new_status=ApprovalStatus.CANCELLED,
        reason=reason,
        acting_user=acting_user,
        action=AuditAction.APPROVAL_REQUEST_CANCEL,
    )
    approval_request.refresh_from_db()
    return locked
