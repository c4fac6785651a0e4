from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from governance.models.vocabulary import Purpose, RiskLevel
from governance.roles import Role

ROLE_CHOICES = [(role.value, role.value.replace("_", " ")) for role in Role]
DEFAULT_APPROVAL_TTL = timedelta(hours=72)


class ApprovalPolicy(models.Model):
    """Which roles must approve, in order, a request for a purpose.

    A policy applies either to one ``purpose`` or to every purpose of a ``risk_level`` (a
    purpose-specific policy wins). ``step_roles`` is the ordered list of deciding roles, e.g.
    ``["reviewer", "compliance_officer"]``. ``approval_ttl`` is how long an approval stays good,
    counted from the first approving decision of a request. Requests copy the steps and the TTL
    when they are created, so editing a policy never changes requests already in flight.
    Policies are retired (``is_active=False``), never deleted; every change is audited.
    """

    name = models.CharField(max_length=100, unique=True)
    purpose = models.ForeignKey(
        Purpose, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    risk_level = models.CharField(max_length=16, choices=RiskLevel.choices, blank=True)
    step_roles = models.JSONField(default=list)
    approval_ttl = models.DurationField(
        default=DEFAULT_APPROVAL_TTL, validators=[MinValueValidator(timedelta(minutes=1))]
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "approval policies"
        constraints = [
            models.CheckConstraint(
                condition=(Q(purpose__isnull=False) & Q(risk_level=""))
                | (Q(purpose__isnull=True) & ~Q(risk_level="")),
                name="approval_policy_purpose_xor_risk_level",
            ),
            models.UniqueConstraint(
                fields=["purpose"],
                condition=Q(is_active=True, purpose__isnull=False),
                name="approval_policy_one_active_per_purpose",
            ),
            models.UniqueConstraint(
                fields=["risk_level"],
                condition=Q(is_active=True) & ~Q(risk_level=""),
                name="approval_policy_one_active_per_risk_level",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    CANCELLED = "cancelled", "Cancelled"


class ApprovalVerdict(models.TextChoices):
    APPROVE = "approve", "Approve"
    REJECT = "reject", "Reject"
    REQUEST_CHANGES = "request_changes", "Request changes"


class ApprovalRequest(models.Model):
    """A request to release one subject (e.g. a render job: ``subject_type`` is the model label
    ``"reenactment.renderjob"``, ``subject_id`` its primary key) under a policy.

    ``status`` is *approved* once every step is approved, and final otherwise (rejected,
    changes requested, cancelled). An approval is good until ``expires_at`` (set by the first
    approving decision: that time plus the policy's TTL); past it the request can neither be
    decided further nor release anything. ``closed_*`` record who ended a request that was not
    approved and why.
    """

    policy = models.ForeignKey(ApprovalPolicy, on_delete=models.PROTECT, related_name="requests")
    purpose = models.ForeignKey(
        Purpose, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    approval_ttl = models.DurationField()
    subject_type = models.CharField(max_length=100)
    subject_id = models.CharField(max_length=64)
    summary = models.CharField(max_length=300, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approval_requests"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField()
    status = models.CharField(
        max_length=20, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    close_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["subject_type", "subject_id"])]
        constraints = [
            models.UniqueConstraint(
                fields=["subject_type", "subject_id"],
                condition=Q(status="pending"),
                name="approval_one_pending_request_per_subject",
            )
        ]

    def __str__(self) -> str:
        return f"Approval request #{self.pk} for {self.subject_type}:{self.subject_id}"


class ApprovalStep(models.Model):
    """One ordered step of a request, decided by one holder of ``role`` who also holds the
    object permission ``governance.decide_approvalstep`` on the step (granted to the role's
    group when the request is created; a compliance officer may narrow it to named users)."""

    request = models.ForeignKey(ApprovalRequest, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveSmallIntegerField()
    role = models.CharField(max_length=32, choices=ROLE_CHOICES)

    class Meta:
        ordering = ["request_id", "order"]
        permissions = [("decide_approvalstep", "Can decide an approval step")]
        constraints = [
            models.UniqueConstraint(fields=["request", "order"], name="approval_step_order_once")
        ]

    def __str__(self) -> str:
        return f"Step {self.order} ({self.role}) of request #{self.request_id}"


class ApprovalDecision(models.Model):
    """The one decision on a step. The database itself refuses a second decision on a step and
    a second decision by the same person on the same request (separation of duties)."""

    step = models.OneToOneField(ApprovalStep, on_delete=models.PROTECT, related_name="decision")
    request = models.ForeignKey(ApprovalRequest, on_delete=models.PROTECT, related_name="decisions")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    verdict = models.CharField(max_length=20, choices=ApprovalVerdict.choices)
    reason = models.TextField(blank=True)
    decided_at = models.DateTimeField()

    class Meta:
        ordering = ["decided_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "decided_by"], name="approval_one_decision_per_person"
            ),
            models.CheckConstraint(
                condition=Q(verdict="approve") | ~Q(reason=""),
                name="approval_refusal_has_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.verdict} on step #{self.step_id}"
