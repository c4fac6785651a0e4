"""Say whether a dataset snapshot is still active or was withdrawn (the trainer's check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance.selectors.registry import snapshot_get
from governance.services.datasets import (
    dataset_snapshot_status_document,
    dataset_snapshot_status_write,
    snapshot_export_id,
    snapshot_pk_from_export_id,
)


class Command(BaseCommand):
    help = (
        'Print a snapshot\'s status as JSON ({"snapshot_id", "status": active|withdrawn, '
        "...}); exit 1 when it is withdrawn. --write DIR refreshes DIR/status.json."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("snapshot", help="The snapshot's id, or its export id snapshot-<id>.")
        parser.add_argument("--write", type=Path, help="Refresh status.json in this folder.")

    def handle(self, *args: Any, **options: Any) -> None:
        reference = str(options["snapshot"])
        pk = int(reference) if reference.isdigit() else snapshot_pk_from_export_id(reference)
        snapshot = snapshot_get(snapshot_id=pk) if pk is not None else None
        if snapshot is None:
            raise CommandError(f"No snapshot {reference}.")
        if options["write"]:
            dataset_snapshot_status_write(folder=options["write"], snapshot=snapshot)
        document: dict[str, object] = {"snapshot_id": snapshot_export_id(snapshot)}
        document.update(dataset_snapshot_status_document(snapshot))
        self.stdout.write(json.dumps(document, indent=1))
        if document["status"] == "withdrawn":
            raise CommandError(
                f"{document['snapshot_id']} is withdrawn: {snapshot.withdraw_reason}"
            )
