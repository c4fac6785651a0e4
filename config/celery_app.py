"""The Celery application: queues, routes and the delivery guarantees of each kind of task.

Two queues. ``default`` carries short CPU work (webhooks, verification, housekeeping);
``gpu`` carries generation, consumed by one worker process per GPU
(platform/bin/start-gpu-worker.sh). Task names are explicit and stable so that a module move
never strands messages already in a queue.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")

DEFAULT_QUEUE = "default"
GPU_QUEUE = "gpu"

# Every task that must run on the GPU pool is named here; the route table and the task
# decorator both read this set, so a GPU task cannot be declared without being routed.
GPU_TASKS: frozenset[str] = frozenset({"reenactment.render_job_run"})

app.conf.update(
    task_default_queue=DEFAULT_QUEUE,
    task_queues=(
        Queue(DEFAULT_QUEUE, Exchange(DEFAULT_QUEUE), routing_key=DEFAULT_QUEUE),
        Queue(GPU_QUEUE, Exchange(GPU_QUEUE), routing_key=GPU_QUEUE),
    ),
    task_routes={name: {"queue": GPU_QUEUE, "routing_key": GPU_QUEUE} for name in GPU_TASKS},
    # JSON only: a pickle on the broker would let whoever can write to it run code on workers.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    # No result backend: job state lives in PostgreSQL.
    task_ignore_result=True,
    # One message at a time per process: a GPU job is long, and a prefetched second job
    # would wait behind it instead of going to an idle GPU.
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    enable_utc=True,
    timezone="UTC",
)
app.autodiscover_tasks()

F = TypeVar("F", bound=Callable[..., Any])


def gpu_task(name: str, **options: Any) -> Callable[[F], Any]:
    """Declare a GPU task: acknowledged only when done, redelivered if its worker dies."""
    if name not in GPU_TASKS:
        raise ValueError(f"GPU task {name!r} is not listed in config.celery_app.GPU_TASKS.")
    options.setdefault("acks_late", True)
    options.setdefault("reject_on_worker_lost", True)
    return app.task(name=name, **options)


def default_task(name: str, **options: Any) -> Callable[[F], Any]:
    """Declare a task for the default queue with an explicit, stable name."""
    if name in GPU_TASKS:
        raise ValueError(f"Task {name!r} is a GPU task; declare it with gpu_task.")
    return app.task(name=name, **options)
