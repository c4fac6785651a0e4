"""Walk the audit hash chain; exit 1 and name the first broken link if there is one."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from governance.selectors.audit import audit_chain_verify


class Command(BaseCommand):
    help = (
        "Verify the audit trail's hash chain (contiguous sequence, each prev_hash equal to the "
        "previous event's hash, each hash equal to the SHA-256 of the event's canonical JSON). "
        "Exits 1 and reports the first broken link with its event id."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_chain_verify()
        if report.first_break is not None:
            broken = report.first_break
            raise CommandError(
                f"Audit chain BROKEN at event id={broken.event_id} "
                f"(sequence {broken.sequence}): {broken.problem}. "
                f"{report.events_checked} events before it verified."
            )
        if report.head_sequence is None:
            self.stdout.write("Audit chain OK: no events yet.")
            return
        self.stdout.write(
            f"Audit chain OK: {report.events_checked} events, head sequence "
            f"{report.head_sequence}, head hash {report.head_hash}."
        )
