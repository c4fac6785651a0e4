"""Datasets, clips and frozen snapshots, their withdrawal, and the training manifest export.

A snapshot holds the clips that are *eligible* when it is frozen: the clip's licence is in
force, covers the snapshot's territory and allows training, and every person in the clip has
a valid training consent: ``consent_assert_valid`` for the purpose ``model_training`` on the
``internal`` channel in the snapshot's territory, as portrait subject **and** as driving
performer (training learns both a person's appearance and their motion). The consents relied on
are recorded, so revoking one flags the snapshot.

The export (``dataset_snapshot_export``) writes what the trainer reads
(``reenactment.engine.training.manifest``): ``manifest.jsonl`` (a header line, then one line
per clip) and ``status.json`` next to it; withdrawing the snapshot later rewrites that
``status.json`` (after commit) so the trainer refuses the manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath

from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import ConsentRevocation
from governance.models import (
    WORLDWIDE,
    AuditEvent,
    Clip,
    ClipPerson,
    ConsentRecord,
    ConsentRole,
    ConsentStatus,
    Dataset,
    DatasetSnapshot,
    DatasetSnapshotClip,
    DatasetSnapshotConsent,
    License,
    LicenseStatus,
    Person,
    SnapshotStatus,
    Territory,
    User,
)
from governance.models.audit import canonical_json
from governance.selectors.consents import ConsentInvalidError, consent_assert_valid
from governance.selectors.registry import (
    snapshot_persons,
    snapshots_relying_on_consent,
    snapshots_with_person,
)
from governance.services.audit import audit_event_record
from governance.services.registry import model_versions_block_dependents

logger = logging.getLogger(__name__)

TRAINING_PURPOSE = "model_training"
TRAINING_CHANNEL = "internal"
TRAINING_ROLES = (ConsentRole.PORTRAIT_SUBJECT, ConsentRole.DRIVING_PERFORMER)
MANIFEST_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.jsonl"
STATUS_FILE = "status.json"
CLIP_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".npz")
SHA256_LENGTH = 64


# --------------------------------------------------------------------------------------------
# Datasets and clips
# --------------------------------------------------------------------------------------------


@transaction.atomic  # composable: the admin calls it inside its own transaction
def dataset_create(*, name: str, description: str = "", acting_user: User | None) -> Dataset:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Give the dataset's name."})
    if Dataset.objects.filter(name__iexact=name).exists():
        raise ValidationError({"name": f"A dataset named {name} exists."})
    dataset = Dataset.objects.create(
        name=name,
        description=description.strip(),
        created_at=timezone.now(),
        created_by=acting_user,
    )
    audit_event_record(
        actor=acting_user,
        action=AuditAction.DATASET_CREATE,
        target_type="governance.dataset",
        target_id=dataset.pk,
        payload={"name": dataset.name},
    )
    return dataset


@dataclass(frozen=True)
class ClipPersonSpec:
    """A person appearing in a clip and, optionally, the training consent relied on."""

    person_id: int
    consent_id: int | None = None


def _is_sha256(value: str) -> bool:
    return len(value) == SHA256_LENGTH and all(c in "0123456789abcdef" for c in value)


def _clip_file_store(upload: File) -> tuple[str, str, int]:
    suffix = PurePath(upload.name or "").suffix.lower()
    if suffix not in CLIP_SUFFIXES:
        raise ValidationError({"file": f"Clips are {', '.join(CLIP_SUFFIXES)} files."})
    digest = hashlib.sha256()
    size = 0
    for chunk in upload.chunks():
        digest.update(chunk)
        size += len(chunk)
    upload.seek(0)
    name = default_storage.save(f"clips/{uuid.uuid4().hex}{suffix}", upload)
    return name, digest.hexdigest(), size


def clip_add(
    *,
    dataset: Dataset,
    licence: License,
    duration_seconds: float,
    fps: float,
    frame_count: int,
    width: int,
    height: int,
    persons: Sequence[ClipPersonSpec] = (),
    file: File | None = None,
    uri: str = "",
    sha256: str = "",
    size_bytes: int | None = None,
    notes: str = "",
    acting_user: User | None,
) -> Clip:
    """Add a clip: an uploaded ``file`` (hashed while stored) or an external ``uri`` with its
    ``sha256``. A given ``sha256`` must match the uploaded bytes. The persons appearing in it
    are listed with the training consent relied on (checked again at every freeze)."""
    errors: dict[str, list[str]] = {}
    sha256 = sha256.strip().lower()
    uri = uri.strip()
    if (file is None) == (not uri):
        errors["file"] = ["Give either a file or a URI."]
    if uri and not _is_sha256(sha256):
        errors["sha256"] = ["An external clip needs its SHA-256 (64 hex digits)."]
    if sha256 and not _is_sha256(sha256):
        errors["sha256"] = ["Give the SHA-256 as 64 hex digits."]
    for label, value in (("fps", fps), ("duration_seconds", duration_seconds)):
        if not value > 0:
            errors[label] = ["Must be positive."]
    for label, number in (("frame_count", frame_count), ("width", width), ("height", height)):
        if number < 1:
            errors[label] = ["Must be at least 1."]
    if licence.status != LicenseStatus.ACTIVE:
        errors["licence"] = [f"The licence {licence.name} is withdrawn."]
    person_ids = [spec.person_id for spec in persons]
    if len(set(person_ids)) != len(person_ids):
        errors["persons"] = ["A person is listed twice."]
    found_persons = Person.objects.in_bulk(person_ids)
    missing = sorted(set(person_ids) - set(found_persons))
    if missing:
        errors.setdefault("persons", []).append(f"Unknown persons: {missing}.")
    consent_ids = [spec.consent_id for spec in persons if spec.consent_id is not None]
    consents = ConsentRecord.objects.in_bulk(consent_ids)
    for spec in persons:
        if spec.consent_id is None:
            continue
        consent = consents.get(spec.consent_id)
        if consent is None or consent.person_id != spec.person_id:
            errors.setdefault("persons", []).append(
                f"Consent #{spec.consent_id} is not a consent of person #{spec.person_id}."
            )
    if errors:
        raise ValidationError(errors)
    stored_name = ""
    if file is not None:
        stored_name, actual, size_bytes = _clip_file_store(file)
        if sha256 and sha256 != actual:
            default_storage.delete(stored_name)
            raise ValidationError(
                {"sha256": f"The file's SHA-256 is {actual}, not the {sha256} given."}
            )
        sha256 = actual
    try:
        with transaction.atomic(durable=True):
            if Clip.objects.filter(dataset=dataset, sha256=sha256).exists():
                raise ValidationError({"sha256": f"This clip is already in {dataset.name}."})
            clip = Clip.objects.create(
                dataset=dataset,
                file=stored_name,
                uri=uri,
                sha256=sha256,
                size_bytes=size_bytes,
                duration_seconds=duration_seconds,
                fps=fps,
                frame_count=frame_count,
                width=width,
                height=height,
                licence=licence,
                notes=notes.strip(),
                created_at=timezone.now(),
                created_by=acting_user,
            )
            ClipPerson.objects.bulk_create(
                ClipPerson(clip=clip, person_id=spec.person_id, consent_id=spec.consent_id)
                for spec in persons
            )
            audit_event_record(
                actor=acting_user,
                action=AuditAction.CLIP_ADD,
                target_type="governance.clip",
                target_id=clip.pk,
                payload={
                    "dataset_id": dataset.pk,
                    "location": clip.location,
                    "sha256": sha256,
                    "license_id": licence.pk,
                    "persons": [
                        {"person_id": s.person_id, "consent_id": s.consent_id} for s in persons
                    ],
                },
            )
    except BaseException:
        if stored_name:
            default_storage.delete(stored_name)
        raise
    return clip


# --------------------------------------------------------------------------------------------
# Freezing
# --------------------------------------------------------------------------------------------


def license_training_problem(licence: License, *, territory: str, at: datetime) -> str | None:
    """Why ``licence`` does not allow training in ``territory`` at ``at`` (None if it does)."""
    if licence.status != LicenseStatus.ACTIVE:
        return f"licence {licence.name} was withdrawn"
    if licence.valid_from > at:
        return f"licence {licence.name} is not yet valid"
    if licence.expires_at is not None and licence.expires_at <= at:
        return f"licence {licence.name} expired on {licence.expires_at.isoformat()}"
    if not licence.allows_training:
        return f"licence {licence.name} does not allow training"
    codes = {t.pk for t in licence.territories.all()}
    if WORLDWIDE not in codes and territory not in codes:
        return f"licence {licence.name} does not cover the territory {territory}"
    return None


def person_training_consent(
    *, person_id: int, territory: str, at: datetime
) -> tuple[ConsentRecord | None, str | None]:
    """The consent under which the person may appear in training data (both roles), or the
    reason there is none."""
    found: ConsentRecord | None = None
    for role in TRAINING_ROLES:
        try:
            consent = consent_assert_valid(
                person=person_id,
                role=role,
                purpose=TRAINING_PURPOSE,
                channel=TRAINING_CHANNEL,
                territory=territory,
                at=at,
            )
        except ConsentInvalidError as exc:
            return None, f"person #{person_id}: {exc.message} ({exc.condition.value})"
        if found is not None and found.pk != consent.pk:
            # A snapshot records one consent per person and clip, so that revoking it flags
            # the snapshot: two records that cover one role each are not enough.
            return None, (
                f"person #{person_id}: no single consent covers both portrait subject and "
                "driving performer for training"
            )
        found = consent
    return found, None


def _item_body(item: DatasetSnapshotClip, persons: Sequence[tuple[int, int]]) -> dict[str, object]:
    return {
        "clip_id": item.clip_id,
        "location": item.location,
        "is_uri": item.is_uri,
        "sha256": item.sha256,
        "fps": item.fps,
        "frame_count": item.frame_count,
        "width": item.width,
        "height": item.height,
        "license_id": item.licence_id,
        "persons": [{"person_id": p, "consent_id": c} for p, c in persons],
    }


def _snapshot_canonical_sha256(
    dataset: Dataset, name: str, territory: str, bodies: Sequence[Mapping[str, object]]
) -> str:
    document = {
        "dataset_id": dataset.pk,
        "name": name,
        "territory": territory,
        "clips": list(bodies),
    }
    return hashlib.sha256(canonical_json(document)).hexdigest()


@transaction.atomic  # composable: the admin calls it inside its own transaction
def dataset_snapshot_freeze(
    *,
    dataset: Dataset,
    name: str,
    territory: str = WORLDWIDE,
    acting_user: User | None,
) -> DatasetSnapshot:
    """Freeze the dataset's eligible clips into an immutable snapshot (409
    ``snapshot_empty`` if none is eligible). Clips left out are listed in ``excluded`` with
    their reasons. The consents and licences relied on are locked while freezing, so a
    concurrent revocation or withdrawal either happens before (the clip is left out) or
    after (the snapshot is flagged)."""
    name = name.strip()
    territory_code = territory.strip().upper()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["Give the snapshot's name."]
    elif DatasetSnapshot.objects.filter(dataset=dataset, name=name).exists():
        errors["name"] = [f"{dataset.name} already has a snapshot named {name}."]
    territory_row = Territory.objects.filter(pk=territory_code).first()
    if territory_row is None:
        errors["territory"] = [f"Unknown territory {territory_code}."]
    if errors:
        raise ValidationError(errors)
    assert territory_row is not None
    clips = list(
        Clip.objects.filter(dataset=dataset)
        .select_related("licence")
        .prefetch_related("licence__territories", "clipperson_set")
        .order_by("id")
    )
    # Lock what eligibility depends on (see the docstring), then decide with fresh rows.
    list(
        License.objects.select_for_update()
        .filter(pk__in={c.licence_id for c in clips})
        .values_list("id", flat=True)
    )
    person_ids = {cp.person_id for c in clips for cp in c.clipperson_set.all()}
    list(
        ConsentRecord.objects.select_for_update()
        .filter(person_id__in=person_ids, status=ConsentStatus.ACTIVE)
        .values_list("id", flat=True)
    )
    for clip in clips:
        clip.licence.refresh_from_db()
    at = timezone.now()
    consent_cache: dict[int, tuple[ConsentRecord | None, str | None]] = {}
    eligible: list[tuple[Clip, list[tuple[int, int]]]] = []
    excluded: list[dict[str, object]] = []
    for clip in clips:
        reasons: list[str] = []
        problem = license_training_problem(clip.licence, territory=territory_code, at=at)
        if problem:
            reasons.append(problem)
        relied: list[tuple[int, int]] = []
        for clip_person in sorted(clip.clipperson_set.all(), key=lambda cp: cp.person_id):
            if clip_person.person_id not in consent_cache:
                consent_cache[clip_person.person_id] = person_training_consent(
                    person_id=clip_person.person_id, territory=territory_code, at=at
                )
            consent, why = consent_cache[clip_person.person_id]
            if consent is None:
                reasons.append(why or f"person #{clip_person.person_id}: no training consent")
            else:
                relied.append((clip_person.person_id, consent.pk))
        if reasons:
            excluded.append({"clip_id": clip.pk, "sha256": clip.sha256, "reasons": reasons})
        else:
            eligible.append((clip, relied))
    if not eligible:
        raise ApplicationError(
            f"No clip of {dataset.name} is eligible for training; nothing was frozen.",
            code="snapshot_empty",
            extra={"excluded": excluded},
            status_code=status.HTTP_409_CONFLICT,
        )
    snapshot = DatasetSnapshot.objects.create(
        dataset=dataset,
        name=name,
        territory=territory_row,
        frozen_at=at,
        frozen_by=acting_user,
        clip_count=len(eligible),
        manifest_sha256="",
        excluded=excluded,
    )
    items: list[DatasetSnapshotClip] = []
    relied_rows: list[DatasetSnapshotConsent] = []
    for position, (clip, relied) in enumerate(eligible):
        items.append(
            DatasetSnapshotClip(
                snapshot=snapshot,
                clip=clip,
                position=position,
                location=clip.location,
                is_uri=not clip.file,
                sha256=clip.sha256,
                fps=clip.fps,
                frame_count=clip.frame_count,
                width=clip.width,
                height=clip.height,
                licence_id=clip.licence_id,
            )
        )
        relied_rows += [
            DatasetSnapshotConsent(snapshot=snapshot, clip=clip, person_id=p, consent_id=c)
            for p, c in relied
        ]
    DatasetSnapshotClip.objects.bulk_create(items)
    DatasetSnapshotConsent.objects.bulk_create(relied_rows)
    bodies = [_item_body(item, relied) for item, (_, relied) in zip(items, eligible, strict=True)]
    snapshot.manifest_sha256 = _snapshot_canonical_sha256(dataset, name, territory_code, bodies)
    snapshot.save(update_fields=["manifest_sha256"])
    audit_event_record(
        actor=acting_user,
        action=AuditAction.DATASET_SNAPSHOT_FREEZE,
        target_type="governance.datasetsnapshot",
        target_id=snapshot.pk,
        payload={
            "dataset_id": dataset.pk,
            "name": name,
            "territory": territory_code,
            "clip_count": len(items),
            "clip_ids": [item.clip_id for item in items],
            "license_ids": sorted({item.licence_id for item in items}),
            "consent_ids": sorted({row.consent_id for row in relied_rows}),
            "excluded": excluded,
            "manifest_sha256": snapshot.manifest_sha256,
        },
    )
    return snapshot


# --------------------------------------------------------------------------------------------
# Withdrawal
# --------------------------------------------------------------------------------------------


@dataclass
class SnapshotWithdrawal:
    snapshot: DatasetSnapshot
    changed: bool
    model_version_ids: list[int] = field(default_factory=list)


@transaction.atomic
def dataset_snapshot_withdraw(
    *,
    snapshot: DatasetSnapshot,
    reason: str,
    cause: Mapping[str, int],
    acting_user: User | None,
) -> SnapshotWithdrawal:
    """Flag a snapshot as withdrawn (a licence or consent it relies on was withdrawn) and block
    the models trained on it. Composable; does nothing if it already is withdrawn. Exported
    ``status.json`` files are rewritten after commit."""
    locked = DatasetSnapshot.objects.select_for_update().get(pk=snapshot.pk)
    if locked.status == SnapshotStatus.WITHDRAWN:
        return SnapshotWithdrawal(locked, changed=False)
    locked.status = SnapshotStatus.WITHDRAWN
    locked.withdrawn_at = timezone.now()
    locked.withdraw_reason = reason.strip()
    locked.save(update_fields=["status", "withdrawn_at", "withdraw_reason"])
    audit_event_record(
        actor=acting_user,
        action=AuditAction.DATASET_SNAPSHOT_WITHDRAW,
        target_type="governance.datasetsnapshot",
        target_id=locked.pk,
        payload={"reason": locked.withdraw_reason, "cause": dict(cause)},
    )
    blocked = model_versions_block_dependents(
        snapshot=locked,
        reason=f"Snapshot #{locked.pk} {locked} was withdrawn: {locked.withdraw_reason}",
        cause={**cause, "snapshot_id": locked.pk},
        acting_user=acting_user,
    )
    snapshot_id = locked.pk
    transaction.on_commit(lambda: dataset_snapshot_status_files_refresh(snapshot_id=snapshot_id))
    snapshot.refresh_from_db()
    return SnapshotWithdrawal(locked, changed=True, model_version_ids=blocked)


def dataset_snapshots_on_consent_revocation(event: ConsentRevocation) -> None:
    """Consent revocation handler: flag the frozen snapshots in which the person appears.

    A snapshot that relied on the revoked consent itself is flagged. Otherwise (the consent
    was superseded, or another consent of the person ended) the snapshot is flagged only if
    the person's consents, as they stand now, no longer cover training in the snapshot's
    territory: a supersession that keeps training covered changes nothing, and one that
    narrows it flags every snapshot the person is in, whichever record in the chain the
    snapshot relied on."""
    snapshots = list(snapshots_with_person(person_id=event.person_id))
    if not snapshots:
        return
    acting_user = (
        User.objects.filter(pk=event.acting_user_id).first() if event.acting_user_id else None
    )
    verb = "superseded" if event.superseded_by_id else "revoked"
    relied_directly = set(
        snapshots_relying_on_consent(consent_id=event.consent_id).values_list("id", flat=True)
    )
    now = timezone.now()
    for snapshot in snapshots:
        if event.superseded_by_id is not None or snapshot.pk not in relied_directly:
            consent, _ = person_training_consent(
                person_id=event.person_id, territory=snapshot.territory_id, at=now
            )
            if consent is not None:
                continue
        dataset_snapshot_withdraw(
            snapshot=snapshot,
            reason=(
                f"Consent #{event.consent_id} of person #{event.person_id} was {verb}: "
                f"{event.reason}"
            ),
            cause={"consent_id": event.consent_id, "person_id": event.person_id},
            acting_user=acting_user,
        )


# --------------------------------------------------------------------------------------------
# Export for the trainer
# --------------------------------------------------------------------------------------------


def snapshot_export_id(snapshot: DatasetSnapshot | int) -> str:
    """The id the trainer knows a snapshot by (``snapshot_id`` in the manifest header)."""
    pk = snapshot.pk if isinstance(snapshot, DatasetSnapshot) else int(snapshot)
    return f"snapshot-{pk}"


def snapshot_pk_from_export_id(export_id: str) -> int | None:
    prefix, _, number = export_id.strip().partition("-")
    return int(number) if prefix == "snapshot" and number.isdigit() else None


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clip_location(item: DatasetSnapshotClip) -> dict[str, str]:
    if item.is_uri:
        return {"uri": item.location}
    try:
        return {"path": default_storage.path(item.location)}
    except NotImplementedError:  # a remote store has no local path
        return {"uri": default_storage.url(item.location)}


def dataset_snapshot_manifest_lines(
    *, snapshot: DatasetSnapshot, exported_at: datetime
) -> Iterator[str]:
    """The JSON Lines manifest, line by line (each ends with a newline): a header, then one
    line per clip in frozen order. Rows are read in chunks, never all at once."""
    header = {
        "snapshot_id": snapshot_export_id(snapshot),
        "exported_at": _iso(exported_at),
        "format_version": MANIFEST_FORMAT_VERSION,
        "dataset": snapshot.dataset.name,
        "snapshot_name": snapshot.name,
        "territory": snapshot.territory_id,
        "clip_count": snapshot.clip_count,
        "snapshot_manifest_sha256": snapshot.manifest_sha256,
        "frozen_at": _iso(snapshot.frozen_at),
    }
    yield json.dumps(header, sort_keys=True) + "\n"
    persons = snapshot_persons(snapshot=snapshot)
    items = DatasetSnapshotClip.objects.filter(snapshot=snapshot).order_by("position")
    for item in items.iterator(chunk_size=500):
        line = {
            **_clip_location(item),
            "sha256": item.sha256,
            "fps": item.fps,
            "frames": item.frame_count,
            "persons": [f"person:{p}" for p in persons.get(item.clip_id, [])],
            "licence_ids": [f"licence:{item.licence_id}"],
            "clip_id": f"clip-{item.clip_id}",
            "width": item.width,
            "height": item.height,
        }
        yield json.dumps(line, sort_keys=True) + "\n"


def snapshot_trainer_status(snapshot: DatasetSnapshot) -> str:
    """What the trainer's status check expects: ``active`` or ``withdrawn``."""
    return "withdrawn" if snapshot.status == SnapshotStatus.WITHDRAWN else "active"


def dataset_snapshot_status_document(snapshot: DatasetSnapshot) -> dict[str, object]:
    return {
        "status": snapshot_trainer_status(snapshot),
        "snapshot_pk": snapshot.pk,
        "checked_at": _iso(timezone.now()),
        "withdrawn_at": _iso(snapshot.withdrawn_at) if snapshot.withdrawn_at else None,
        "reason": snapshot.withdraw_reason,
    }


def _atomic_write(path: Path, text_lines: Iterator[str] | Sequence[str]) -> str:
    """Write lines to a temporary file next to ``path`` and rename it into place; returns the
    SHA-256 of what was written."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in text_lines:
                digest.update(line.encode("utf-8"))
                handle.write(line)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def dataset_snapshot_status_write(*, folder: Path, snapshot: DatasetSnapshot) -> Path:
    """Write (or update) ``status.json`` in ``folder`` with the snapshot's current status, in
    the shape the trainer's ``FileSnapshotStatusChecker`` reads."""
    path = folder / STATUS_FILE
    data: dict[str, object] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            data = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            data = {}
    table = data.get("snapshots")
    snapshots = dict(table) if isinstance(table, dict) else {}
    snapshots[snapshot_export_id(snapshot)] = dataset_snapshot_status_document(snapshot)
    data["snapshots"] = snapshots
    _atomic_write(path, [json.dumps(data, indent=1, sort_keys=True) + "\n"])
    return path


def dataset_snapshot_status_files_refresh(*, snapshot_id: int) -> list[Path]:
    """Rewrite ``status.json`` in every folder this snapshot was exported to (from the export
    audit events); folders that are gone are skipped."""
    snapshot = DatasetSnapshot.objects.get(pk=snapshot_id)
    folders = {
        str(payload.get("out_dir"))
        for payload in AuditEvent.objects.filter(
            action=AuditAction.DATASET_SNAPSHOT_EXPORT,
            target_type="governance.datasetsnapshot",
            target_id=str(snapshot_id),
        ).values_list("payload", flat=True)
        if isinstance(payload, dict) and payload.get("out_dir")
    }
    written: list[Path] = []
    for folder in sorted(folders):
        try:
            if Path(folder).is_dir():
                written.append(
                    dataset_snapshot_status_write(folder=Path(folder), snapshot=snapshot)
                )
        except OSError:
            logger.exception(
                "cannot refresh %s/%s for snapshot %s", folder, STATUS_FILE, snapshot_id
            )
    return written


@dataclass(frozen=True)
class SnapshotExport:
    snapshot_id: str
    manifest_path: Path
    status_path: Path
    manifest_sha256: str
    clip_count: int
    exported_at: datetime


def _refuse_withdrawn(snapshot: DatasetSnapshot) -> None:
    if snapshot.status == SnapshotStatus.WITHDRAWN:
        raise ApplicationError(
            f"Snapshot #{snapshot.pk} {snapshot} was withdrawn ({snapshot.withdraw_reason}); "
            "it must not be exported for training.",
            code="snapshot_withdrawn",
            extra={"snapshot_id": snapshot.pk},
            status_code=status.HTTP_409_CONFLICT,
        )


def dataset_snapshot_export(
    *, snapshot: DatasetSnapshot, out_dir: Path | str, acting_user: User | None
) -> SnapshotExport:
    """Write ``manifest.jsonl`` (streamed) and ``status.json`` into ``out_dir`` for the
    trainer; audited with the folder, so a later withdrawal rewrites its ``status.json``.
    A withdrawn snapshot is refused (409 ``snapshot_withdrawn``)."""
    snapshot.refresh_from_db()
    _refuse_withdrawn(snapshot)
    folder = Path(out_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    exported_at = timezone.now()
    manifest_path = folder / MANIFEST_FILE
    digest = _atomic_write(
        manifest_path, dataset_snapshot_manifest_lines(snapshot=snapshot, exported_at=exported_at)
    )
    try:
        with transaction.atomic(durable=True):
            locked = DatasetSnapshot.objects.select_for_update().get(pk=snapshot.pk)
            _refuse_withdrawn(locked)
            status_path = dataset_snapshot_status_write(folder=folder, snapshot=locked)
            audit_event_record(
                actor=acting_user,
                action=AuditAction.DATASET_SNAPSHOT_EXPORT,
                target_type="governance.datasetsnapshot",
                target_id=locked.pk,
                payload={
                    "out_dir": str(folder),
                    "export_id": snapshot_export_id(locked),
                    "manifest_file_sha256": digest,
                    "exported_at": exported_at,
                    "clip_count": locked.clip_count,
                },
            )
    except BaseException:
        manifest_path.unlink(missing_ok=True)
        raise
    return SnapshotExport(
        snapshot_id=snapshot_export_id(snapshot),
        manifest_path=manifest_path,
        status_path=status_path,
        manifest_sha256=digest,
        clip_count=snapshot.clip_count,
        exported_at=exported_at,
    )


@transaction.atomic(durable=True)
def dataset_snapshot_download_record(
    *, snapshot: DatasetSnapshot, acting_user: User | None, exported_at: datetime
) -> None:
    """Audit an export streamed over the API (no folder: nothing to refresh later)."""
    locked = DatasetSnapshot.objects.select_for_update().get(pk=snapshot.pk)
    _refuse_withdrawn(locked)
    audit_event_record(
        actor=acting_user,
        action=AuditAction.DATASET_SNAPSHOT_EXPORT,
        target_type="governance.datasetsnapshot",
        target_id=locked.pk,
        payload={
            "out_dir": None,
            "export_id": snapshot_export_id(locked),
            "exported_at": exported_at,
            "clip_count": locked.clip_count,
        },
    )
