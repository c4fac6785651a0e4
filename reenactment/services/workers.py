"""Worker pool visibility: heartbeats from every worker node, and who is alive."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from reenactment.models import RenderJob, WorkerHeartbeat


def worker_heartbeat_record(
    *,
    nodename: str,
    hostname: str,
    queues: list[str],
    device: dict[str, Any],
    loaded_models: list[int] | None = None,
    current_job_id: int | None | bool = False,
) -> None:
    """Upsert the node's heartbeat (not audited: a liveness signal, not a state change).

    ``current_job_id=False`` leaves the current job as it is; ``None`` clears it.
    """
    defaults: dict[str, Any] = {
        "hostname": hostname,
        "queues": queues,
        "device": device,
        "last_seen": timezone.now(),
    }
    if loaded_models is not None:
        defaults["loaded_models"] = loaded_models
    if current_job_id is not False:
        defaults["current_job_id"] = current_job_id
    WorkerHeartbeat.objects.update_or_create(nodename=nodename, defaults=defaults)


def worker_live_list() -> QuerySet[WorkerHeartbeat]:
    cutoff = timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_TIMEOUT)
    return WorkerHeartbeat.objects.filter(last_seen__gte=cutoff).order_by("nodename")


def gpu_capacity_available() -> bool:
    """Whether any live worker consumes the ``gpu`` queue."""
    return any("gpu" in worker.queues for worker in worker_live_list())


def render_job_waiting_for_capacity(job: RenderJob) -> bool:
    return job.status == "queued" and not gpu_capacity_available()
