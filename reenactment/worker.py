"""Worker-process plumbing: heartbeats for pool visibility, a scratch sweep at start.

The worker's main process sends a heartbeat every ``WORKER_HEARTBEAT_INTERVAL`` seconds from a
daemon thread (host, queues, device); the process that runs a job updates the loaded models and
the current job around each run. An operator endpoint lists the nodes seen recently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from reenactment import runtime

logger = logging.getLogger(__name__)

_state: dict[str, Any] = {"nodename": None, "queues": [], "stop": None}


def _send(**extra: Any) -> None:
    from reenactment.services.workers import worker_heartbeat_record

    nodename = _state["nodename"]
    if not nodename:
        return
    close_old_connections()
    try:
        worker_heartbeat_record(
            nodename=nodename,
            hostname=runtime.hostname(),
            queues=_state["queues"],
            device=runtime.device_description(),
            **extra,
        )
    except Exception:  # noqa: BLE001 - a missed heartbeat must never kill a worker
        logger.exception("heartbeat failed")


@worker_ready.connect
def _sweep_scratch(**kwargs: Any) -> None:
    # Folders of this host's processes killed before they could clean up (a worker restarted
    # after the OOM killer took its pool process, say); later ones go when work starts.
    from reenactment.scratch import scratch_sweep

    try:
        scratch_sweep()
    except OSError:
        logger.exception("could not sweep the scratch folder")


@worker_ready.connect
def _start_heartbeats(sender: Any = None, **kwargs: Any) -> None:
    consumer = sender
    _state["nodename"] = consumer.hostname
    _state["queues"] = sorted(q.name for q in consumer.task_consumer.queues)
    stop = threading.Event()
    _state["stop"] = stop

    def loop() -> None:
        while not stop.is_set():
            _send()
            stop.wait(settings.WORKER_HEARTBEAT_INTERVAL)

    threading.Thread(target=loop, name="heartbeat", daemon=True).start()


@worker_shutdown.connect
def _stop_heartbeats(**kwargs: Any) -> None:
    stop = _state.get("stop")
    if stop is not None:
        stop.set()


@contextmanager
def current_job(job_id: int) -> Iterator[None]:
    """Show ``job_id`` as the node's current job while it runs (in the pool process)."""
    from celery import current_task

    nodename = getattr(current_task.request, "hostname", None) if current_task else None
    _state["nodename"] = _state["nodename"] or nodename
    _send(current_job_id=job_id)
    try:
        yield
    finally:
        _send(current_job_id=None, loaded_models=runtime.loaded_model_versions())
