"""Reads of render jobs, scoped to what the caller may see."""

from __future__ import annotations

from django.db.models import QuerySet

from governance.models import User
from reenactment.models import RenderJob, WebhookDelivery, WebhookEndpoint


def render_job_visible_list(*, user: User) -> QuerySet[RenderJob]:
    """Every job for roles that oversee jobs; a requester's own jobs otherwise."""
    jobs = RenderJob.objects.select_related("model_version", "purpose")
    if user.has_perm("reenactment.view_renderjob"):
        return jobs
    return jobs.filter(requested_by=user)


def render_job_get_visible(*, user: User, job_id: int) -> RenderJob | None:
    return render_job_visible_list(user=user).filter(pk=job_id).first()


def webhook_endpoint_list(*, user: User) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(owner=user).order_by("-created_at")


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return endpoint.deliveries.order_by("-created_at")
