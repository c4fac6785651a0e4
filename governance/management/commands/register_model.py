"""Register a folder of X-NeMo weights in the model registry (hashes, compatibility, licence,
lineage); refuse an incompatible or tampered folder with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.api import ApplicationError
from governance.models import DatasetSnapshot, ModelVersion, User
from governance.selectors.registry import license_find, model_version_find, snapshot_get
from governance.services.registry import model_version_register


def _lineage(values: list[str]) -> tuple[list[DatasetSnapshot], ModelVersion | None]:
    snapshots: list[DatasetSnapshot] = []
    parent: ModelVersion | None = None
    for value in (part.strip() for item in values for part in item.split(",")):
        if not value:
            continue
        kind, _, reference = value.partition(":")
        if kind == "snapshot" and reference.isdigit():
            snapshot = snapshot_get(snapshot_id=int(reference))
            if snapshot is None:
                raise CommandError(f"--lineage {value}: no such snapshot.")
            snapshots.append(snapshot)
        elif kind in ("model", "parent") and reference:
            found = model_version_find(reference=reference)
            if found is None:
                raise CommandError(f"--lineage {value}: no such model version.")
            if parent is not None and parent.pk != found.pk:
                raise CommandError("--lineage names two parent models; a model has one parent.")
            parent = found
        else:
            raise CommandError(
                f"--lineage {value!r}: use snapshot:<id>, model:<id> or model:<name>:<version>."
            )
    return snapshots, parent


class Command(BaseCommand):
    help = (
        "Register a model folder: our safetensors layout (reference_unet/, denoising_unet/, "
        "motion_encoder/, ...) or an official .pth set. Every file is hashed (and compared with "
        "--checksums when given), the weights are checked against the X-NeMo networks by the "
        "engine's loader, and the licence and lineage are recorded. Audited."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder", help="The weights folder (absolute, or under MODELS_DIR).")
        parser.add_argument("--name", help="Model name (default: the folder's name).")
        parser.add_argument(
            "--model-version", required=True, help="The version, unique per model name."
        )
        parser.add_argument(
            "--license",
            "--licence",
            dest="license",
            required=True,
            help="The weights' licence: its id or exact name.",
        )
        parser.add_argument(
            "--lineage",
            action="append",
            default=[],
            help=(
                "What the model was trained on / fine-tuned from: snapshot:<id>, model:<id> or "
                "model:<name>:<version> (repeat, or separate with commas)."
            ),
        )
        parser.add_argument(
            "--checksums",
            type=Path,
            help="Pinned hashes ({relative path: sha256}); any difference refuses the folder.",
        )
        demo = parser.add_mutually_exclusive_group()
        demo.add_argument(
            "--demonstration",
            dest="demonstration",
            action="store_true",
            default=None,
            help="Mark as a demonstration model (output not meaningful).",
        )
        demo.add_argument("--not-demonstration", dest="demonstration", action="store_false")
        parser.add_argument("--description", default="")
        parser.add_argument("--acting-user", help="Username recorded as the actor (data steward).")
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        folder = Path(options["folder"])
        licence = license_find(reference=options["license"])
        if licence is None:
            raise CommandError(f"--license {options['license']!r}: no such licence.")
        snapshots, parent = _lineage(options["lineage"])
        actor = None
        if options["acting_user"]:
            actor = User.objects.filter(username=options["acting_user"]).first()
            if actor is None:
                raise CommandError(f"--acting-user {options['acting_user']!r}: no such user.")
        try:
            model = model_version_register(
                name=options["name"] or folder.resolve().name,
                version=options["model_version"],
                folder=folder,
                licence=licence,
                parent=parent,
                snapshots=snapshots,
                checksums=options["checksums"],
                is_demonstration=options["demonstration"],
                description=options["description"],
                acting_user=actor,
            )
        except ApplicationError as exc:
            raise CommandError(f"Refused ({exc.code}): {exc.message}") from exc
        except ValidationError as exc:
            messages = "; ".join(
                f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items()
            )
            raise CommandError(f"Refused: {messages}") from exc
        summary = {
            "id": model.pk,
            "name": model.name,
            "version": model.version,
            "layout": model.layout,
            "weights_sha256": model.weights_sha256,
            "files": model.weight_files.count(),
            "license": licence.name,
            "parent": str(parent) if parent else None,
            "snapshots": [s.pk for s in snapshots],
            "is_demonstration": model.is_demonstration,
            "folder": model.folder,
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=1))
            return
        self.stdout.write(
            f"Registered {model.name} {model.version} (id {model.pk}, {model.layout}, "
            f"{summary['files']} files, fingerprint {model.weights_sha256}) under licence "
            f"{licence.name}; lineage: parent {summary['parent'] or 'none'}, snapshots "
            f"{summary['snapshots'] or 'none'}."
        )
