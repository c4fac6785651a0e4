"""Separate OS processes append to the audit chain at the same time; the chain never forks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from governance.models import GENESIS_HASH, AuditEvent
from governance.selectors.audit import audit_chain_verify

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
EVENTS_PER_WORKER = 25

# Each worker sets Django up, says it is ready, waits for the common start signal, then appends
# its events, one transaction each, holding the chain lock a little while inside each.
WORKER = """
import sys, time
from pathlib import Path
import django
django.setup()
from django.db import transaction
from governance.audit_codes import AuditAction
from governance.services.audit import audit_event_record
worker, count, folder = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
(folder / f"ready-{worker}").touch()
while not (folder / "go").exists():
    time.sleep(0.002)
for index in range(count):
    with transaction.atomic():
        audit_event_record(
            actor=None,
            action=AuditAction.AUDIT_EXPORT,
            target_type="test.worker",
            target_id=f"{worker}-{index}",
            payload={"worker": worker, "index": index},
        )
        time.sleep(0.005)
"""


def _env() -> dict[str, str]:
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": url}


@pytest.mark.django_db(transaction=True)
def test_parallel_processes_extend_one_unforked_chain(tmp_path):
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n), str(EVENTS_PER_WORKER), str(tmp_path)],
            cwd=REPO_ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 90
        while len(list(tmp_path.glob("ready-*"))) < WORKERS:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
            time.sleep(0.02)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [p.returncode for p in processes] == [0] * WORKERS, outputs

    events = list(AuditEvent.objects.order_by("sequence"))
    total = WORKERS * EVENTS_PER_WORKER
    assert [e.sequence for e in events] == list(range(1, total + 1))
    assert [e.prev_hash for e in events] == [GENESIS_HASH] + [e.hash for e in events[:-1]]
    assert len({e.prev_hash for e in events}) == total  # no two events extend the same head
    # Every worker's events are all there, in its own order.
    for worker in range(WORKERS):
        mine = [e.payload["index"] for e in events if e.payload["worker"] == worker]
        assert mine == list(range(EVENTS_PER_WORKER))
    # The writers really ran at the same time: the chain alternates between them.
    switches = sum(
        1
        for a, b in zip(events, events[1:], strict=False)
        if a.payload["worker"] != b.payload["worker"]
    )
    assert switches >= WORKERS
    report = audit_chain_verify()
    assert (report.ok, report.events_checked) == (True, total)
    call_command("audit_verify")
