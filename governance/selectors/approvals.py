from __future__ import annotations

from datetime import datetime

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user
from rest_framework import status

from config.api import ApplicationError
from governance.models import (
    ApprovalDecision,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalStatus,
    ApprovalStep,
    Purpose,
    User,
)

DECIDE_PERMISSION = "governance.decide_approvalstep"
EXPIRED = "expired"


class ApprovalNotReleasedError(ApplicationError):
    """The request does not (or no longer) release its subject (409); ``status`` says why."""


def approval_policy_for_purpose(*, purpose: Purpose) -> ApprovalPolicy | None:
    """The active policy for ``purpose``: its own if it has one, else its risk level's."""
    own = ApprovalPolicy.objects.filter(purpose=purpose, is_active=True).first()
    if own is not None:
        return own
    return ApprovalPolicy.objects.filter(risk_level=purpose.risk_level, is_active=True).first()


def approval_request_queryset() -> QuerySet[ApprovalRequest]:
    return ApprovalRequest.objects.select_related(
        "policy", "purpose", "requested_by", "created_by", "closed_by"
    ).prefetch_related("steps__decision__decided_by")


def approval_request_get(*, request_id: int) -> ApprovalRequest | None:
    return approval_request_queryset().filter(pk=request_id).first()


def approval_request_for_subject(
    *, subject_type: str, subject_id: int | str
) -> ApprovalRequest | None:
    """The newest request for a subject (pending or not)."""
    return (
        approval_request_queryset()
        .filter(subject_type=subject_type, subject_id=str(subject_id))
        .order_by("-created_at", "-id")
        .first()
    )


def approval_request_effective_status(
    approval_request: ApprovalRequest, at: datetime | None = None
) -> str:
    """The stored status, or ``"expired"`` for a pending or approved request whose approval has
    gone stale."""
    at = at or timezone.now()
    if (
        approval_request.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
        and approval_request.expires_at is not None
        and approval_request.expires_at <= at
    ):
        return EXPIRED
    return approval_request.status


def approval_request_is_released(
    *, approval_request: ApprovalRequest, at: datetime | None = None
) -> bool:
    """Whether every step approved the request and the approval has not expired at ``at``."""
    return approval_request_effective_status(approval_request, at) == ApprovalStatus.APPROVED


def approval_request_assert_released(
    *, approval_request: ApprovalRequest, at: datetime | None = None
) -> None:
    """Raise ``ApprovalNotReleasedError`` (409) unless the request releases its subject now.

    Call it right before acting on the approval (dispatching a job), with a freshly read
    request: a stale approval must not release anything.
    """
    effective = approval_request_effective_status(approval_request, at)
    if effective == ApprovalStatus.APPROVED:
        return
    if effective == EXPIRED:
        assert approval_request.expires_at is not None
        message = (
            f"The approval of request #{approval_request.pk} expired at "
            f"{approval_request.expires_at.isoformat()}; request a new approval."
        )
    elif effective == ApprovalStatus.PENDING:
        message = f"Request #{approval_request.pk} is still waiting for approval."
    else:
        outcome = {
            ApprovalStatus.REJECTED: "was rejected",
            ApprovalStatus.CHANGES_REQUESTED: "was sent back for changes",
            ApprovalStatus.CANCELLED: "was cancelled",
        }[ApprovalStatus(effective)]
        message = f"Request #{approval_request.pk} {outcome}."
    raise ApprovalNotReleasedError(
        message,
        code="approval_not_released",
        status_code=status.HTTP_409_CONFLICT,
        extra={
            "approval_request_id": approval_request.pk,
            "status": effective,
            "expires_at": approval_request.expires_at.isoformat()
            if approval_request.expires_at
            else None,
        },
    )


def user_holds_step_role(*, user: User, step: ApprovalStep) -> bool:
    return user.is_active and user.groups.filter(name=step.role).exists()


def user_may_decide_step(*, user: User, step: ApprovalStep) -> bool:
    """Holder of the step's role *and* of the object permission to decide this step."""
    return user_holds_step_role(user=user, step=step) and user.has_perm(DECIDE_PERMISSION, step)


def _decidable_steps(user: User) -> QuerySet[ApprovalStep]:
    # Object grants only (to the user or their groups): a global permission or superuser
    # status never makes someone a decider.
    return get_objects_for_user(
        user,
        DECIDE_PERMISSION,
        klass=ApprovalStep,
        accept_global_perms=False,
        with_superuser=False,
    )


def approval_request_is_visible_to(*, user: User, approval_request: ApprovalRequest) -> bool:
    """The requester, anyone who may decide one of its steps, and holders of the global
    ``view_approvalrequest`` permission (compliance officers) may read a request."""
    if not user.is_authenticated:
        return False
    if user.pk in (approval_request.requested_by_id, approval_request.created_by_id):
        return True
    if user.has_perm("governance.view_approvalrequest"):
        return True
    if ApprovalDecision.objects.filter(request=approval_request, decided_by=user).exists():
        return True
    return _decidable_steps(user).filter(request=approval_request).exists()


def approval_inbox_list(*, user: User, at: datetime | None = None) -> QuerySet[ApprovalStep]:
    """Steps waiting for ``user``: the current (first undecided) step of a pending, unexpired
    request, of a role they hold, with the object permission to decide it, on a request they
    neither made nor already decided a step of. Oldest request first."""
    at = at or timezone.now()
    earlier_undecided = ApprovalStep.objects.filter(
        request=OuterRef("request"), order__lt=OuterRef("order"), decision__isnull=True
    )
    decided_by_user = ApprovalDecision.objects.filter(request=OuterRef("request"), decided_by=user)
    return (
        _decidable_steps(user)
        .filter(
            role__in=list(user.groups.values_list("name", flat=True)),
            decision__isnull=True,
            request__status=ApprovalStatus.PENDING,
        )
        .filter(Q(request__expires_at__isnull=True) | Q(request__expires_at__gt=at))
        .exclude(request__requested_by=user)
        .exclude(request__created_by=user)
        .exclude(Exists(earlier_undecided))
        .exclude(Exists(decided_by_user))
        .select_related("request", "request__requested_by", "request__purpose")
        .order_by("request__created_at", "request_id", "order")
    )
