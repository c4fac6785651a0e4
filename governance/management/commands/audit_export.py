"""Export the audit trail (JSON Lines or CSV) to a file or stdout; the export is audited."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from governance.audit_codes import AuditAction
from governance.context import request_context
from governance.models import User
from governance.selectors.audit import audit_event_list, audit_export_csv, audit_export_jsonl
from governance.services.audit import audit_export_record


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        raise CommandError(f"--{name} must be an ISO 8601 time with a zone, got {value!r}.")
    return parsed


class Command(BaseCommand):
    help = (
        "Export audit events as JSON Lines (verifiable: each line has the canonical body) or "
        "CSV, filtered by time range, actor, target and action. --user names the compliance "
        "officer the export is recorded for."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Username the export is audited as.")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--output", help="File to write (default: stdout).")
        parser.add_argument("--since", help="ISO 8601 time, inclusive.")
        parser.add_argument("--until", help="ISO 8601 time, exclusive.")
        parser.add_argument("--actor", type=int, help="Actor user id.")
        parser.add_argument("--target-type")
        parser.add_argument("--target-id")
        parser.add_argument("--action", help="Action name (consent.revoke) or code (1203).")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["user"], is_active=True).first()
        if user is None or not user.has_perm("governance.export_auditevent"):
            raise CommandError(f"{options['user']!r} is not an active user allowed to export.")
        action = None
        if options["action"]:
            try:
                action = AuditAction.from_lookup(options["action"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        filters = {
            "since": _when(options["since"], "since"),
            "until": _when(options["until"], "until"),
            "actor_id": options["actor"],
            "target_type": options["target_type"],
            "target_id": options["target_id"],
            "action": action,
        }
        with request_context(request_id=None, client_address=None):
            audit_export_record(
                file_format=options["format"],
                filters={key: value for key, value in filters.items() if value is not None},
                acting_user=user,
            )
        queryset = audit_event_list(**filters)
        if options["format"] == "csv":
            lines = audit_export_csv(queryset)
        else:
            lines = audit_export_jsonl(queryset)
        if options["output"]:
            with Path(options["output"]).open("w", encoding="utf-8", newline="") as handle:
                handle.writelines(lines)
        else:
            for line in lines:
                self.stdout.write(line, ending="")
