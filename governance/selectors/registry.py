"""Reads of licensed data and the model registry, the model's lineage, and the licence-aware
use gate (``model_version_assert_usable``) that every job submission goes through."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Prefetch, QuerySet
from django.utils import timezone
from rest_framework import status

from config.api import ApplicationError
from governance.models import (
    WORLDWIDE,
    Clip,
    ClipPerson,
    Dataset,
    DatasetSnapshot,
    DatasetSnapshotClip,
    DatasetSnapshotConsent,
    License,
    LicenseStatus,
    LicenseUse,
    Licensor,
    ModelVersion,
    ModelVersionStatus,
    Purpose,
    SnapshotStatus,
    Territory,
)

# --------------------------------------------------------------------------------------------
# Lists and details
# --------------------------------------------------------------------------------------------


def licensor_list() -> QuerySet[Licensor]:
    return Licensor.objects.all()


def licensor_get(*, licensor_id: int) -> Licensor | None:
    return Licensor.objects.filter(pk=licensor_id).first()


def license_queryset() -> QuerySet[License]:
    return License.objects.select_related("licensor").prefetch_related(
        Prefetch("territories", queryset=Territory.objects.order_by("code"))
    )


def license_list(
    *, status: str | None = None, use: str | None = None, licensor_id: int | None = None
) -> QuerySet[License]:
    qs = license_queryset()
    if status:
        qs = qs.filter(status=status)
    if use in LicenseUse.values:
        qs = qs.filter(**{f"allows_{use}": True})
    if licensor_id is not None:
        qs = qs.filter(licensor_id=licensor_id)
    return qs


def license_get(*, license_id: int) -> License | None:
    return license_queryset().filter(pk=license_id).first()


def license_find(*, reference: str) -> License | None:
    """A licence by id or by exact name (case-insensitive), for commands."""
    reference = reference.strip()
    if reference.isdigit():
        return license_get(license_id=int(reference))
    return license_queryset().filter(name__iexact=reference).first()


def dataset_list() -> QuerySet[Dataset]:
    return Dataset.objects.all()


def dataset_get(*, dataset_id: int) -> Dataset | None:
    return Dataset.objects.filter(pk=dataset_id).first()


def clip_queryset() -> QuerySet[Clip]:
    return Clip.objects.select_related("dataset", "licence").prefetch_related(
        Prefetch("clipperson_set", queryset=ClipPerson.objects.order_by("person_id"))
    )


def clip_list(*, dataset_id: int | None = None, license_id: int | None = None) -> QuerySet[Clip]:
    qs = clip_queryset()
    if dataset_id is not None:
        qs = qs.filter(dataset_id=dataset_id)
    if license_id is not None:
        qs = qs.filter(licence_id=license_id)
    return qs


def clip_get(*, clip_id: int) -> Clip | None:
    return clip_queryset().filter(pk=clip_id).first()


def snapshot_queryset() -> QuerySet[DatasetSnapshot]:
    return DatasetSnapshot.objects.select_related("dataset", "territory")


def snapshot_list(
    *, dataset_id: int | None = None, status: str | None = None
) -> QuerySet[DatasetSnapshot]:
    qs = snapshot_queryset()
    if dataset_id is not None:
        qs = qs.filter(dataset_id=dataset_id)
    if status:
        qs = qs.filter(status=status)
    return qs


def snapshot_get(*, snapshot_id: int) -> DatasetSnapshot | None:
    return snapshot_queryset().filter(pk=snapshot_id).first()


def snapshot_items(*, snapshot: DatasetSnapshot) -> QuerySet[DatasetSnapshotClip]:
    return DatasetSnapshotClip.objects.filter(snapshot=snapshot).order_by("position")


def snapshot_persons(*, snapshot: DatasetSnapshot) -> dict[int, list[int]]:
    """``{clip id: [person ids]}`` as frozen (the consents each clip relied on)."""
    persons: dict[int, list[int]] = {}
    rows = DatasetSnapshotConsent.objects.filter(snapshot=snapshot).order_by("clip_id", "person_id")
    for clip_id, person_id in rows.values_list("clip_id", "person_id"):
        persons.setdefault(clip_id, []).append(person_id)
    return persons


def snapshot_license_ids(*, snapshot: DatasetSnapshot) -> list[int]:
    return sorted(
        set(
            DatasetSnapshotClip.objects.filter(snapshot=snapshot).values_list(
                "licence_id", flat=True
            )
        )
    )


def snapshots_using_license(*, license: License) -> QuerySet[DatasetSnapshot]:  # noqa: A002
    """Frozen snapshots holding at least one clip under ``license``."""
    return DatasetSnapshot.objects.filter(
        status=SnapshotStatus.FROZEN, items__licence=license
    ).distinct()


def snapshots_relying_on_consent(*, consent_id: int) -> QuerySet[DatasetSnapshot]:
    """Frozen snapshots that relied on the consent ``consent_id`` for a person in a clip."""
    return DatasetSnapshot.objects.filter(
        status=SnapshotStatus.FROZEN, consents_relied_on__consent_id=consent_id
    ).distinct()


def snapshots_with_person(*, person_id: int) -> QuerySet[DatasetSnapshot]:
    """Frozen snapshots holding a clip in which the person appears."""
    return DatasetSnapshot.objects.filter(
        status=SnapshotStatus.FROZEN, consents_relied_on__person_id=person_id
    ).distinct()


def model_version_queryset() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("licence", "parent").prefetch_related(
        "weight_files", "snapshots"
    )


def model_version_list(
    *, status: str | None = None, name: str | None = None
) -> QuerySet[ModelVersion]:
    qs = model_version_queryset()
    if status:
        qs = qs.filter(status=status)
    if name:
        qs = qs.filter(name=name)
    return qs


def model_version_get(*, model_version_id: int) -> ModelVersion | None:
    return model_version_queryset().filter(pk=model_version_id).first()


def model_version_find(*, reference: str) -> ModelVersion | None:
    """A model version by id or ``name:version``, for commands."""
    reference = reference.strip()
    if reference.isdigit():
        return model_version_get(model_version_id=int(reference))
    name, _, version = reference.rpartition(":")
    return model_version_queryset().filter(name=name, version=version).first()


def model_version_descendants(*, model_version_ids: set[int]) -> set[int]:
    """The ids given plus every model fine-tuned from them, at any depth."""
    found = set(model_version_ids)
    frontier = set(model_version_ids)
    while frontier:
        children = set(
            ModelVersion.objects.filter(parent_id__in=frontier).values_list("id", flat=True)
        )
        frontier = children - found
        found |= frontier
    return found


# --------------------------------------------------------------------------------------------
# Lineage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineageLicence:
    """A licence a model depends on, and where in its lineage: ``"weights of <model>"`` or
    ``"training data of snapshot <snapshot> (model <model>)"``."""

    license: License
    where: str


def _ancestors(model_version: ModelVersion) -> Iterator[ModelVersion]:
    seen: set[int] = set()
    current: ModelVersion | None = model_version
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        yield current
        current = (
            model_version_queryset().filter(pk=current.parent_id).first()
            if current.parent_id
            else None
        )


def model_version_lineage_licences(*, model_version: ModelVersion) -> list[LineageLicence]:
    """Every licence in the model's lineage: its own, its snapshots' clip licences, then the
    same for its parent, grandparent, ..."""
    result: list[LineageLicence] = []
    for model in _ancestors(model_version):
        result.append(
            LineageLicence(license_queryset().get(pk=model.licence_id), f"weights of {model}")
        )
        for snapshot in model.snapshots.select_related("dataset").order_by("id"):
            for licence in license_queryset().filter(
                pk__in=snapshot_license_ids(snapshot=snapshot)
            ):
                result.append(
                    LineageLicence(
                        licence, f"training data of snapshot #{snapshot.pk} {snapshot} ({model})"
                    )
                )
    return result


def model_version_lineage_snapshots(*, model_version: ModelVersion) -> list[DatasetSnapshot]:
    return [
        snapshot
        for model in _ancestors(model_version)
        for snapshot in model.snapshots.select_related("dataset", "territory").order_by("id")
    ]


def _licence_summary(licence: License) -> dict[str, object]:
    return {
        "id": licence.pk,
        "name": licence.name,
        "status": licence.status,
        "allowed_uses": licence.allowed_uses(),
        "expires_at": licence.expires_at,
    }


def model_version_lineage(*, model_version: ModelVersion) -> dict[str, object]:
    """The lineage tree: the model, its licence, the snapshots it was trained on (with their
    clip licences) and its parent's lineage, recursively (a cycle is cut, never followed)."""

    def node(model: ModelVersion, seen: frozenset[int]) -> dict[str, object]:
        parent = model.parent if model.parent_id and model.parent_id not in seen else None
        return {
            "id": model.pk,
            "name": model.name,
            "version": model.version,
            "status": model.status,
            "weights_sha256": model.weights_sha256,
            "licence": _licence_summary(model.licence),
            "snapshots": [
                {
                    "id": snapshot.pk,
                    "dataset": snapshot.dataset.name,
                    "name": snapshot.name,
                    "status": snapshot.status,
                    "clip_count": snapshot.clip_count,
                    "manifest_sha256": snapshot.manifest_sha256,
                    "licences": [
                        _licence_summary(licence)
                        for licence in License.objects.filter(
                            pk__in=snapshot_license_ids(snapshot=snapshot)
                        )
                    ],
                }
                for snapshot in model.snapshots.select_related("dataset").order_by("id")
            ],
            "parent": node(parent, seen | {model.pk}) if parent is not None else None,
        }

    return node(model_version, frozenset())


# --------------------------------------------------------------------------------------------
# The use gate
# --------------------------------------------------------------------------------------------


class ModelVersionUnusableError(ApplicationError):
    """The model version may not be used for a new job (409): blocked, deprecated, or a
    licence in its lineage forbids the purpose (``code == "licence_forbids"``, naming the
    licence in ``license_id``/``license_name`` and the failed ``condition``)."""

    def __init__(self, message: str, *, code: str, model_version_id: int, **extra: object) -> None:
        super().__init__(
            message,
            code=code,
            extra={"model_version_id": model_version_id, **extra},
            status_code=status.HTTP_409_CONFLICT,
        )
        self.model_version_id = model_version_id
        self.license_id = extra.get("license_id")
        self.condition = extra.get("condition")


@dataclass(frozen=True)
class ModelUseClearance:
    """A passed gate: the use checked and every licence walked (their attribution texts are
    what the output must credit)."""

    model_version_id: int
    use: str
    licence_ids: tuple[int, ...]
    attributions: tuple[str, ...] = field(default=())


def purpose_needed_use(purpose: Purpose) -> str:
    """A commercial purpose needs ``commercial_output``; any other ``research_output``."""
    return LicenseUse.COMMERCIAL_OUTPUT if purpose.is_commercial else LicenseUse.RESEARCH_OUTPUT


def model_version_assert_active(*, model_version: ModelVersion) -> None:
    """Refuse a blocked or deprecated model for new jobs (409)."""
    model_version.refresh_from_db(fields=["status", "status_reason"])
    if model_version.status == ModelVersionStatus.ACTIVE:
        return
    code = (
        "model_version_blocked"
        if model_version.status == ModelVersionStatus.BLOCKED
        else "model_version_deprecated"
    )
    reason = f": {model_version.status_reason}" if model_version.status_reason else ""
    raise ModelVersionUnusableError(
        f"Model {model_version} is {model_version.status}{reason}; it cannot be used for new jobs.",
        code=code,
        model_version_id=model_version.pk,
        status=model_version.status,
    )


def _territory_covered(licence: License, territory: str) -> bool:
    codes = {t.pk for t in licence.territories.all()}
    return WORLDWIDE in codes or territory in codes


def territory_code_of(territory: Territory | str | None) -> str | None:
    """A territory as the upper-case code licences are checked against (None: any)."""
    if isinstance(territory, Territory):
        return territory.pk
    return (territory or "").upper() or None


def license_use_problem(
    *, licence: License, purpose: Purpose, territory: str | None, at: datetime
) -> tuple[str, str] | None:
    """Why ``licence`` does not cover output for ``purpose`` in ``territory`` at ``at``, as
    ``(condition, detail)``; None when it does. Conditions: ``withdrawn``, ``not_yet_valid``,
    ``expired``, ``use`` (the purpose's use is not allowed), ``territory``. The one rule for
    every licence a job's output relies on: the model's lineage and the face recogniser's."""
    use = purpose_needed_use(purpose)
    if licence.status == LicenseStatus.WITHDRAWN:
        return "withdrawn", f"was withdrawn ({licence.withdraw_reason})"
    if licence.valid_from > at:
        return "not_yet_valid", f"is valid only from {licence.valid_from:%Y-%m-%d}"
    if licence.expires_at is not None and licence.expires_at <= at:
        return "expired", f"expired on {licence.expires_at:%Y-%m-%d}"
    if not licence.allows(use):
        allowed = ", ".join(licence.allowed_uses()) or "nothing"
        return "use", (
            f"does not allow {use.replace('_', ' ')} (purpose {purpose.pk}"
            f"{', commercial' if purpose.is_commercial else ''}); it allows {allowed}"
        )
    if territory and not _territory_covered(licence, territory):
        return "territory", f"does not cover the territory {territory}"
    return None


def model_version_assert_usable(
    *,
    model_version: ModelVersion,
    purpose: Purpose | str,
    territory: Territory | str | None = None,
    at: datetime | None = None,
) -> ModelUseClearance:
    """Whether ``model_version`` may make output for ``purpose`` (in ``territory``, at ``at``).

    The model must be active; no snapshot in its lineage may be withdrawn; and every licence
    in its lineage (its weights' licence, the clip licences of the snapshots it and its
    ancestors were trained on, its ancestors' weights licences) must be in force at ``at``,
    cover ``territory`` and allow the purpose's use: ``commercial_output`` for a commercial
    purpose, ``research_output`` otherwise. The first failure raises
    ``ModelVersionUnusableError`` (409) saying which licence forbids it and why.
    """
    at = at or timezone.now()
    if isinstance(purpose, str):
        purpose = Purpose.objects.get(pk=purpose)
    territory_code = territory_code_of(territory)
    model_version_assert_active(model_version=model_version)
    use = purpose_needed_use(purpose)
    for snapshot in model_version_lineage_snapshots(model_version=model_version):
        if snapshot.status == SnapshotStatus.WITHDRAWN:
            raise ModelVersionUnusableError(
                f"Model {model_version} was trained on snapshot #{snapshot.pk} {snapshot}, "
                f"which was withdrawn: {snapshot.withdraw_reason}",
                code="lineage_withdrawn",
                model_version_id=model_version.pk,
                snapshot_id=snapshot.pk,
            )
    walked: list[License] = []
    for item in model_version_lineage_licences(model_version=model_version):
        licence = item.license
        problem = license_use_problem(
            licence=licence, purpose=purpose, territory=territory_code, at=at
        )
        if problem is not None:
            condition, detail = problem
            raise ModelVersionUnusableError(
                f"The licence {licence.name} ({item.where}) {detail}.",
                code="licence_forbids",
                model_version_id=model_version.pk,
                license_id=licence.pk,
                license_name=licence.name,
                condition=condition,
                use=use,
                where=item.where,
            )
        walked.append(licence)
    unique = list({licence.pk: licence for licence in walked}.values())
    return ModelUseClearance(
        model_version_id=model_version.pk,
        use=use,
        licence_ids=tuple(licence.pk for licence in unique),
        attributions=tuple(lic.attribution_text for lic in unique if lic.attribution_text),
    )
