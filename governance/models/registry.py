"""Licensed training data and the model registry.

Who owns what:

* A ``Licensor`` grants ``License``s. A licence says which uses it allows (training, evaluation,
  research output, commercial output), where (territories), until when (``expires_at``), and
  can be *withdrawn* once (``license_withdraw``), which flags every snapshot and blocks every
  model that depends on it.
* A ``Dataset`` groups ``Clip``s; each clip is held under one licence and lists the persons who
  appear in it (``ClipPerson``), each with the training consent the steward pointed to.
* A ``DatasetSnapshot`` is the frozen, immutable list of the clips that were *eligible* at
  freezing time (licence allows training and has not expired or been withdrawn, every person
  has a valid training consent), with their hashes and the consents relied on. Snapshots are
  never edited; when a licence or consent they rely on is withdrawn they become *withdrawn*
  (flagged) and stay readable for the record.
* A ``ModelVersion`` is one set of weights (hash-pinned files, ``ModelWeightFile``), with its
  own licence, the snapshots it was trained on and its parent model (lineage). A model whose
  licence or lineage is withdrawn is *blocked*: no new job may use it.

Every change goes through the audited services in ``governance.services.licences``,
``governance.services.datasets`` and ``governance.services.registry``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from governance.models.consents import ConsentRecord
from governance.models.persons import Person
from governance.models.vocabulary import Territory


class LicenseUse(models.TextChoices):
    """What a licence may allow. ``research_output`` is non-commercial output (research,
    internal material); ``commercial_output`` is output for a commercial purpose."""

    TRAINING = "training", "Training"
    EVALUATION = "evaluation", "Evaluation"
    RESEARCH_OUTPUT = "research_output", "Research (non-commercial) output"
    COMMERCIAL_OUTPUT = "commercial_output", "Commercial output"


class LicenseStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    WITHDRAWN = "withdrawn", "Withdrawn"


class SnapshotStatus(models.TextChoices):
    FROZEN = "frozen", "Frozen"
    WITHDRAWN = "withdrawn", "Withdrawn (a licence or consent it relies on was withdrawn)"


class ModelVersionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DEPRECATED = "deprecated", "Deprecated (no new jobs; kept for reproduction)"
    BLOCKED = "blocked", "Blocked (its licence or lineage was withdrawn)"


class ModelLayout(models.TextChoices):
    XNEMO_SAFETENSORS = "xnemo_safetensors", "Project safetensors layout"
    OFFICIAL_PTH = "official_pth", "Official X-NeMo .pth set"


class Licensor(models.Model):
    """Who grants licences: a rights holder, an agency, or the project itself."""

    name = models.CharField(max_length=200, unique=True)
    contact = models.CharField(max_length=300, blank=True)
    url = models.URLField(blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class License(models.Model):
    """The terms under which data or weights may be used.

    ``allows_*`` are the uses granted; ``territories`` where (``WW`` = worldwide); the licence
    counts from ``valid_from`` until ``expires_at`` (empty: no end) unless it is withdrawn
    (``withdrawn_at``/``withdrawn_by``/``withdraw_reason``, set once). ``terms_text`` and the
    optional ``terms_file`` (with its SHA-256) are the terms as agreed; ``attribution_text`` is
    what outputs or publications must credit.
    """

    licensor = models.ForeignKey(Licensor, on_delete=models.PROTECT, related_name="licenses")
    name = models.CharField(max_length=200, unique=True)
    spdx_id = models.CharField(max_length=64, blank=True)
    terms_text = models.TextField(blank=True)
    terms_file = models.FileField(max_length=255, blank=True)
    terms_sha256 = models.CharField(max_length=64, blank=True)
    allows_training = models.BooleanField(default=False)
    allows_evaluation = models.BooleanField(default=False)
    allows_research_output = models.BooleanField(default=False)
    allows_commercial_output = models.BooleanField(default=False)
    territories = models.ManyToManyField(Territory, through="LicenseTerritory", related_name="+")
    attribution_text = models.TextField(blank=True)
    valid_from = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=LicenseStatus.choices, default=LicenseStatus.ACTIVE
    )
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    withdraw_reason = models.TextField(blank=True)
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        permissions = [("withdraw_license", "Can withdraw a licence")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(status=LicenseStatus.ACTIVE, withdrawn_at__isnull=True)
                    | Q(status=LicenseStatus.WITHDRAWN, withdrawn_at__isnull=False)
                ),
                name="license_withdrawn_iff_withdrawn_at",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def allowed_uses(self) -> list[str]:
        return [
            use
            for use, allowed in (
                (LicenseUse.TRAINING, self.allows_training),
                (LicenseUse.EVALUATION, self.allows_evaluation),
                (LicenseUse.RESEARCH_OUTPUT, self.allows_research_output),
                (LicenseUse.COMMERCIAL_OUTPUT, self.allows_commercial_output),
            )
            if allowed
        ]

    def allows(self, use: str) -> bool:
        return use in self.allowed_uses()


class LicenseTerritory(models.Model):
    license = models.ForeignKey(License, on_delete=models.CASCADE)
    territory = models.ForeignKey(Territory, on_delete=models.PROTECT)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["license", "territory"], name="license_territory_once")
        ]
        verbose_name_plural = "licence territories"

    def __str__(self) -> str:
        return f"{self.territory_id} in licence #{self.license_id}"


class Dataset(models.Model):
    """A named collection of clips, managed by data stewards."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Clip(models.Model):
    """One training video: a stored ``file`` or an external ``uri`` (exactly one), its SHA-256
    and media properties, the licence it is held under, and the persons who appear in it."""

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="clips")
    file = models.FileField(max_length=255, blank=True)
    uri = models.CharField(max_length=1000, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    duration_seconds = models.FloatField()
    fps = models.FloatField()
    frame_count = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    licence = models.ForeignKey(License, on_delete=models.PROTECT, related_name="clips")
    persons = models.ManyToManyField(Person, through="ClipPerson", related_name="clips")
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["dataset", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(file="") & ~Q(uri="")) | (~Q(file="") & Q(uri="")),
                name="clip_file_xor_uri",
            ),
            models.UniqueConstraint(fields=["dataset", "sha256"], name="clip_once_per_dataset"),
        ]

    def __str__(self) -> str:
        return f"Clip #{self.pk} {self.sha256[:12]}"

    @property
    def location(self) -> str:
        return str(self.file.name) if self.file else self.uri


class ClipPerson(models.Model):
    """A person appearing in a clip, with the training consent the steward relies on
    (re-checked with ``consent_assert_valid`` every time a snapshot is frozen)."""

    clip = models.ForeignKey(Clip, on_delete=models.CASCADE)
    person = models.ForeignKey(Person, on_delete=models.PROTECT)
    consent = models.ForeignKey(
        ConsentRecord, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["clip", "person"], name="clip_person_once")]

    def __str__(self) -> str:
        return f"Person #{self.person_id} in clip #{self.clip_id}"


class DatasetSnapshot(models.Model):
    """The immutable, frozen list of a dataset's eligible clips at ``frozen_at``.

    ``manifest_sha256`` is the SHA-256 of the canonical list of its clips (id, hash, licence,
    persons and consents), so an exported manifest can be tied to it. ``territory`` is where
    the training takes place (``WW``: anywhere), checked against licences and consents.
    ``excluded`` records, per clip left out, why. A withdrawn snapshot (``withdrawn_at``,
    ``withdraw_reason``) must not be used for new training; the models trained on it are
    blocked.
    """

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="snapshots")
    name = models.CharField(max_length=200)
    territory = models.ForeignKey(Territory, on_delete=models.PROTECT, related_name="+")
    frozen_at = models.DateTimeField()
    frozen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    clip_count = models.PositiveIntegerField()
    manifest_sha256 = models.CharField(max_length=64)
    excluded = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=16, choices=SnapshotStatus.choices, default=SnapshotStatus.FROZEN
    )
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdraw_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-frozen_at", "-id"]
        permissions = [
            ("export_datasetsnapshot", "Can export a dataset snapshot's training manifest"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "name"], name="snapshot_name_per_dataset"),
            models.CheckConstraint(
                condition=(
                    Q(status=SnapshotStatus.FROZEN, withdrawn_at__isnull=True)
                    | Q(status=SnapshotStatus.WITHDRAWN, withdrawn_at__isnull=False)
                ),
                name="snapshot_withdrawn_iff_withdrawn_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} / {self.name}"


class DatasetSnapshotClip(models.Model):
    """One frozen clip of a snapshot, as it was at freezing time (hash, location, licence,
    media properties); never edited."""

    snapshot = models.ForeignKey(DatasetSnapshot, on_delete=models.PROTECT, related_name="items")
    clip = models.ForeignKey(Clip, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()
    location = models.CharField(max_length=1000)
    is_uri = models.BooleanField()
    sha256 = models.CharField(max_length=64)
    fps = models.FloatField()
    frame_count = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    licence = models.ForeignKey(License, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["snapshot", "position"]
        constraints = [
            models.UniqueConstraint(fields=["snapshot", "clip"], name="snapshot_clip_once"),
            models.UniqueConstraint(fields=["snapshot", "position"], name="snapshot_position_once"),
        ]

    def __str__(self) -> str:
        return f"Clip #{self.clip_id} in snapshot #{self.snapshot_id}"


class DatasetSnapshotConsent(models.Model):
    """A consent a snapshot relies on: the person appears in ``clip`` under ``consent``."""

    snapshot = models.ForeignKey(
        DatasetSnapshot, on_delete=models.PROTECT, related_name="consents_relied_on"
    )
    clip = models.ForeignKey(Clip, on_delete=models.PROTECT, related_name="+")
    person = models.ForeignKey(Person, on_delete=models.PROTECT, related_name="+")
    consent = models.ForeignKey(ConsentRecord, on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["snapshot", "clip", "person"], name="snapshot_consent_once"
            )
        ]
        indexes = [models.Index(fields=["consent"]), models.Index(fields=["person"])]

    def __str__(self) -> str:
        return f"Consent #{self.consent_id} in snapshot #{self.snapshot_id}"


class ModelVersion(models.Model):
    """One registered set of weights.

    ``weights_sha256`` is the combined fingerprint over the files (SHA-256 of the sorted
    ``relative_path  sha256`` lines, see ``governance.integrations.model_files``); each file's
    own hash is a ``ModelWeightFile``. ``folder`` is relative to ``settings.MODELS_DIR`` or
    absolute. ``licence`` is the weights' own licence; the lineage is ``parent`` (the model it
    was fine-tuned from) and ``snapshots`` (what it was trained on). ``is_demonstration`` marks
    a model whose outputs are not meaningful (tiny demo weights). A *blocked* model may not be
    used for new jobs; ``status_reason``/``status_changed_*`` say why and who.
    """

    name = models.CharField(max_length=100)
    version = models.CharField(max_length=50)
    status = models.CharField(
        max_length=16, choices=ModelVersionStatus.choices, default=ModelVersionStatus.ACTIVE
    )
    licence = models.ForeignKey(License, on_delete=models.PROTECT, related_name="model_versions")
    layout = models.CharField(max_length=32, choices=ModelLayout.choices)
    architecture = models.JSONField(default=dict, blank=True)
    weights_sha256 = models.CharField(max_length=64, db_index=True)
    folder = models.CharField(max_length=1000)
    is_demonstration = models.BooleanField(default=False)
    parent = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="children"
    )
    snapshots = models.ManyToManyField(DatasetSnapshot, blank=True, related_name="model_versions")
    description = models.TextField(blank=True)
    status_reason = models.TextField(blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    status_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["name", "-created_at", "-id"]
        permissions = [
            ("block_modelversion", "Can block a model version"),
            ("deprecate_modelversion", "Can deprecate a model version"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="model_name_version_once"),
            models.CheckConstraint(
                condition=~Q(parent=models.F("id")), name="model_not_own_parent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class ModelWeightFile(models.Model):
    """One file of a model version's weights, with the SHA-256 it was registered with."""

    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="weight_files"
    )
    relative_path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()

    class Meta:
        ordering = ["model_version", "relative_path"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "relative_path"], name="model_weight_file_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.relative_path} ({self.sha256[:12]})"
