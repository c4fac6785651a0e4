"""Celery tasks: receive ids, call one service, hold no business logic.

``render_job_run`` runs on the ``gpu`` queue with acks_late and reject_on_worker_lost (see
``config.celery_app.gpu_task``): a worker that dies mid-job returns the message to the queue and
the job is taken over by the next worker (``render_job_claim``).
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from config.celery_app import default_task, gpu_task
from reenactment.services import execution, verification, webhooks


@gpu_task(
    "reenactment.render_job_run",
    bind=True,
    soft_time_limit=settings.RENDER_SOFT_TIME_LIMIT,
    time_limit=settings.RENDER_TIME_LIMIT,
    autoretry_for=(execution.TransientGenerationError,),
    retry_backoff=True,
    max_retries=3,
)
def render_job_run_task(self: Any, job_id: int) -> None:
    worker = self.request.hostname or "unknown"
    try:
        claim = execution.render_job_claim(job_id=job_id, worker=worker)
    except execution.JobLeaseHeld as held:
        # Not a failure: wait for the lease to expire (or the job to finish) and look again.
        raise self.retry(countdown=held.retry_in, max_retries=None) from held
    if claim is None:
        return
    from reenactment.worker import current_job

    with current_job(job_id):
        try:
            execution.render_job_generate(claim=claim)
        except SoftTimeLimitExceeded:
            execution.render_job_fail(
                claim=claim,
                reason=f"Generation exceeded its time limit ({settings.RENDER_SOFT_TIME_LIMIT} s).",
            )


@default_task("reenactment.render_job_verify", soft_time_limit=1800, time_limit=2000)
def render_job_verify_task(job_id: int) -> None:
    verification.render_job_verify_run(job_id=job_id)


@default_task(
    "reenactment.webhook_deliver",
    bind=True,
    autoretry_for=(webhooks.WebhookAttemptFailed,),
    retry_backoff=settings.WEBHOOK_RETRY_BACKOFF,
    retry_backoff_max=600,
    retry_jitter=False,
    max_retries=settings.WEBHOOK_MAX_RETRIES,
)
def webhook_deliver_task(self: Any, delivery_id: int) -> None:
    final = self.request.retries >= settings.WEBHOOK_MAX_RETRIES
    webhooks.webhook_delivery_attempt(delivery_id=delivery_id, final=final)
