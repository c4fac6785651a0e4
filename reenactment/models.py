"""Render jobs and their execution on the GPU worker pool.

A job's ``status`` moves only along ``RenderJob.TRANSITIONS``, and only through the services in
``reenactment.services`` (each one audited); ``render_job_transition`` raises on anything else.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class RenderJobStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    APPROVED = "approved", "Approved"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    GENERATED = "generated", "Generated"
    VERIFYING = "verifying", "Verifying"
    PUBLISHED = "published", "Published"
    REJECTED = "rejected", "Rejected"
    QUARANTINED = "quarantined", "Quarantined"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    WITHDRAWN = "withdrawn", "Withdrawn"


S = RenderJobStatus

# The state machine. Terminal states have no way out. QUARANTINED leaves only by a compliance
# decision (release -> VERIFYING, where the rest of the chain, signing included, still has to
# pass; reject -> REJECTED) or a withdrawal.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.SUBMITTED, S.CANCELLED}),
    S.SUBMITTED: frozenset({S.AWAITING_APPROVAL, S.REJECTED, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED}),
    S.APPROVED: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.CANCELLED, S.FAILED, S.REJECTED}),
    S.RUNNING: frozenset({S.GENERATED, S.FAILED, S.CANCELLED, S.QUEUED}),
    S.GENERATED: frozenset({S.VERIFYING, S.CANCELLED}),
    S.VERIFYING: frozenset({S.PUBLISHED, S.QUARANTINED, S.FAILED, S.CANCELLED}),
    S.QUARANTINED: frozenset({S.VERIFYING, S.REJECTED, S.WITHDRAWN, S.CANCELLED}),
    S.PUBLISHED: frozenset({S.WITHDRAWN}),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.WITHDRAWN: frozenset(),
}
TERMINAL = frozenset(status for status, targets in TRANSITIONS.items() if not targets)
# Before the GPU: a revoked consent blocks these (the job is cancelled and never runs).
PENDING = frozenset({S.DRAFT, S.SUBMITTED, S.AWAITING_APPROVAL, S.APPROVED, S.QUEUED})
# An output exists but is not (yet) published.
HELD_OUTPUT = frozenset({S.GENERATED, S.VERIFYING, S.QUARANTINED})


class RenderJob(models.Model):
    """Animate ``portrait_subject``'s portrait with ``performer``'s motion, under consent.

    ``portrait`` and ``driving`` are the uploaded inputs, content-hashed on the way in.
    ``output`` is the generated video; after verification it is replaced by the C2PA-signed file
    (``output_sha256`` always names what is stored). ``parameters`` are the generation settings
    actually used (steps, guidance, seed, ...) and ``reproducibility`` everything needed to re-run
    the job. Progress fields are written at most once a second by the running worker.
    """

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="render_jobs"
    )
    portrait_subject = models.ForeignKey(
        "governance.Person", on_delete=models.PROTECT, related_name="+"
    )
    performer = models.ForeignKey("governance.Person", on_delete=models.PROTECT, related_name="+")
    purpose = models.ForeignKey("governance.Purpose", on_delete=models.PROTECT, related_name="+")
    channels = models.JSONField(default=list)
    territory = models.CharField(max_length=8)
    model_version = models.ForeignKey(
        "governance.ModelVersion", on_delete=models.PROTECT, related_name="+"
    )
    title = models.CharField(max_length=200, blank=True)

    portrait = models.FileField(upload_to="jobs/inputs/", max_length=300)
    portrait_sha256 = models.CharField(max_length=64)
    portrait_info = models.JSONField(default=dict)
    driving = models.FileField(upload_to="jobs/inputs/", max_length=300)
    driving_sha256 = models.CharField(max_length=64)
    driving_info = models.JSONField(default=dict)

    consent_ids = models.JSONField(default=list)  # the consents checked at submission
    parameters = models.JSONField(default=dict)
    reproducibility = models.JSONField(default=dict, blank=True)
    approval_request = models.ForeignKey(
        "governance.ApprovalRequest",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )

    status = models.CharField(max_length=20, choices=RenderJobStatus.choices, default=S.DRAFT)
    status_reason = models.CharField(max_length=500, blank=True)
    status_changed_at = models.DateTimeField(default=timezone.now)
    cancel_requested = models.BooleanField(default=False)

    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    claim_token = models.CharField(max_length=64, blank=True)
    # Renewed every RENDER_LEASE_INTERVAL s by the process generating the job; a stale lease
    # means that process died and another worker may take the job over.
    lease_renewed_at = models.DateTimeField(null=True, blank=True)
    progress_percent = models.FloatField(default=0.0)
    progress_step = models.PositiveIntegerField(default=0)
    progress_total_steps = models.PositiveIntegerField(default=0)
    progress_frames = models.PositiveIntegerField(default=0)
    progress_total_frames = models.PositiveIntegerField(default=0)
    progress_updated_at = models.DateTimeField(null=True, blank=True)

    output = models.FileField(upload_to="jobs/outputs/", max_length=300, blank=True)
    output_sha256 = models.CharField(max_length=64, blank=True)
    output_size = models.PositiveBigIntegerField(default=0)
    generated_sha256 = models.CharField(max_length=64, blank=True)
    generation_seconds = models.FloatField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"])]
        permissions = [("withdraw_renderjob", "Can withdraw a published output")]

    def __str__(self) -> str:
        return f"RenderJob #{self.pk} ({self.status})"

    def can_transition_to(self, status: str) -> bool:
        return status in TRANSITIONS[self.status]


class VerificationStepName(models.TextChoices):
    LEAKAGE = "leakage", "Identity-leakage gate"
    PROVENANCE = "provenance", "C2PA signing and verification"


# The chain, in order. Publication requires every step to have passed.
VERIFICATION_CHAIN: tuple[str, ...] = (
    VerificationStepName.LEAKAGE,
    VerificationStepName.PROVENANCE,
)


class VerificationStepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PASSED = "passed", "Passed"
    REVIEW = "review", "Needs review"
    FAILED = "failed", "Failed"


class VerificationStep(models.Model):
    """One check of the verification chain for one job (``detail`` holds its figures)."""

    job = models.ForeignKey(RenderJob, on_delete=models.CASCADE, related_name="verifications")
    name = models.CharField(max_length=30, choices=VerificationStepName.choices)
    status = models.CharField(
        max_length=20,
        choices=VerificationStepStatus.choices,
        default=VerificationStepStatus.PENDING,
    )
    detail = models.JSONField(default=dict)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "name"], name="one_verification_step_per_job")
        ]

    def __str__(self) -> str:
        return f"{self.name} of job #{self.job_id}: {self.status}"


class WorkerHeartbeat(models.Model):
    """The last sign of life of one Celery worker node (host, device, models, current job)."""

    nodename = models.CharField(max_length=200, unique=True)
    hostname = models.CharField(max_length=200)
    queues = models.JSONField(default=list)
    device = models.JSONField(default=dict)
    loaded_models = models.JSONField(default=list)
    current_job = models.ForeignKey(
        RenderJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.nodename


class WebhookEndpoint(models.Model):
    """A URL a requester registered to receive their jobs' state changes, HMAC-signed."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.url


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed (gave up)"


class WebhookDelivery(models.Model):
    """One event for one endpoint, with every attempt's outcome: the delivery log."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    job = models.ForeignKey(RenderJob, on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(
        max_length=20,
        choices=WebhookDeliveryStatus.choices,
        default=WebhookDeliveryStatus.PENDING,
    )
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    log = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.event} -> {self.endpoint_id} ({self.status})"
