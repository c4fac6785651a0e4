"""Export a frozen dataset snapshot as the trainer's JSON Lines manifest (+ status.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.api import ApplicationError
from governance.models import User
from governance.selectors.registry import snapshot_get
from governance.services.datasets import dataset_snapshot_export


class Command(BaseCommand):
    help = (
        "Write OUT_DIR/manifest.jsonl (a header line with snapshot_id and exported_at, then one "
        "line per clip: path or uri, sha256, fps, frames, persons, licence_ids) and "
        "OUT_DIR/status.json, which the trainer checks before training and which is rewritten "
        "if the snapshot is withdrawn later. A withdrawn snapshot is refused. Audited."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("snapshot_id", type=int)
        parser.add_argument("out_dir", type=Path)
        parser.add_argument("--acting-user", help="Username recorded as the actor.")

    def handle(self, *args: Any, **options: Any) -> None:
        snapshot = snapshot_get(snapshot_id=options["snapshot_id"])
        if snapshot is None:
            raise CommandError(f"No snapshot {options['snapshot_id']}.")
        actor = None
        if options["acting_user"]:
            actor = User.objects.filter(username=options["acting_user"]).first()
            if actor is None:
                raise CommandError(f"--acting-user {options['acting_user']!r}: no such user.")
        try:
            export = dataset_snapshot_export(
                snapshot=snapshot, out_dir=options["out_dir"], acting_user=actor
            )
        except ApplicationError as exc:
            raise CommandError(f"Refused ({exc.code}): {exc.message}") from exc
        self.stdout.write(
            f"Exported {export.snapshot_id} ({export.clip_count} clips) to "
            f"{export.manifest_path} (sha256 {export.manifest_sha256}); status in "
            f"{export.status_path}."
        )
