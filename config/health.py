"""Liveness and readiness probes.

``/healthz`` answers as long as the process can serve a request. ``/readyz`` says whether the
platform can do work: the database answers, the broker accepts a connection, and at least one
Celery worker answers a ping. Every check is reported by name; a failing check gives 503 with
the reason, never a 500.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection

from config.celery_app import app as celery_app

CheckResult = dict[str, object]


def _timed(check: Callable[[], dict[str, object]]) -> CheckResult:
    started = time.monotonic()
    try:
        detail = check()
        result: CheckResult = {"ok": True, **detail}
    except Exception as exc:  # noqa: BLE001 - a probe reports any failure instead of raising
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    return result


def check_database() -> dict[str, object]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def check_broker() -> dict[str, object]:
    # A fresh connection from the settings, not Celery's pool: the probe must see the broker
    # as it is now, not a connection that was opened when it still answered.
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=2,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        return {"transport": conn.transport.driver_name}


def check_workers() -> dict[str, object]:
    # limit=1: one answering worker is enough to be ready, so return on the first reply
    # instead of waiting out the whole timeout.
    replies = celery_app.control.ping(timeout=settings.CELERY_WORKER_PING_TIMEOUT, limit=1)
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        raise RuntimeError(
            f"no Celery worker answered a ping within {settings.CELERY_WORKER_PING_TIMEOUT}s"
        )
    return {"workers": workers}


READINESS_CHECKS: dict[str, Callable[[], dict[str, object]]] = {
    "database": check_database,
    "broker": check_broker,
    "workers": check_workers,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "checks": {"process": {"ok": True}}})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = {name: _timed(check) for name, check in READINESS_CHECKS.items()}
    ready = all(result["ok"] for result in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
