"""Licensed training data and the model registry (governance.models.registry), and their
defaults: the ``model_training`` purpose that training consents name, the project-owned CC0
licence with the SynthFace dataset, and the licence of the official X-NeMo weights
(CC BY-NC 4.0: research output and evaluation only, never commercial output)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

PROJECT_LICENSOR = "Portrait platform project"
XNEMO_LICENSOR = "ByteDance (X-NeMo authors)"
SYNTHFACE_LICENCE = "CC0 1.0 (SynthFace, project-owned)"
XNEMO_LICENCE = "CC BY-NC 4.0 (ByteDance X-NeMo weights)"
SYNTHFACE_DATASET = "SynthFace"
TRAINING_PURPOSE = "model_training"


def seed_registry_defaults(apps, schema_editor):
    from django.utils import timezone

    Purpose = apps.get_model("governance", "Purpose")
    Territory = apps.get_model("governance", "Territory")
    Licensor = apps.get_model("governance", "Licensor")
    License = apps.get_model("governance", "License")
    LicenseTerritory = apps.get_model("governance", "LicenseTerritory")
    Dataset = apps.get_model("governance", "Dataset")
    now = timezone.now()
    Purpose.objects.get_or_create(
        code=TRAINING_PURPOSE,
        defaults={
            "label": "Training the platform's models",
            "description": (
                "Use of the person's recorded likeness and motion as training data for the "
                "platform's own models. Named by the training consents a dataset snapshot "
                "relies on."
            ),
            "is_commercial": False,
            "risk_level": "low",
        },
    )
    worldwide, _ = Territory.objects.get_or_create(code="WW", defaults={"label": "Worldwide"})
    project, _ = Licensor.objects.get_or_create(
        name=PROJECT_LICENSOR,
        defaults={"notes": "The platform's own data (procedural SynthFace).", "created_at": now},
    )
    bytedance, _ = Licensor.objects.get_or_create(
        name=XNEMO_LICENSOR,
        defaults={
            "notes": "Authors of the official X-NeMo release.",
            "created_at": now,
        },
    )
    synth, _ = License.objects.get_or_create(
        name=SYNTHFACE_LICENCE,
        defaults={
            "licensor": project,
            "spdx_id": "CC0-1.0",
            "terms_text": (
                "The project dedicates the procedurally generated SynthFace data to the public "
                "domain (CC0 1.0 Universal): it may be used for any purpose, including "
                "training, evaluation and commercial output, without attribution."
            ),
            "allows_training": True,
            "allows_evaluation": True,
            "allows_research_output": True,
            "allows_commercial_output": True,
            "valid_from": now,
            "created_at": now,
        },
    )
    xnemo, _ = License.objects.get_or_create(
        name=XNEMO_LICENCE,
        defaults={
            "licensor": bytedance,
            "spdx_id": "CC-BY-NC-4.0",
            "terms_text": (
                "Creative Commons Attribution-NonCommercial 4.0 International. The official "
                "X-NeMo weights may be used for research and evaluation; no commercial use."
            ),
            "allows_training": False,
            "allows_evaluation": True,
            "allows_research_output": True,
            "allows_commercial_output": False,
            "attribution_text": "X-NeMo (ByteDance), licensed under CC BY-NC 4.0.",
            "valid_from": now,
            "created_at": now,
        },
    )
    for licence in (synth, xnemo):
        LicenseTerritory.objects.get_or_create(license=licence, territory=worldwide)
    Dataset.objects.get_or_create(
        name=SYNTHFACE_DATASET,
        defaults={
            "description": (
                "Procedural talking faces with separate identity and motion parameters "
                "(reenactment.engine.synthface); no real person appears in them."
            ),
            "created_at": now,
        },
    )


def unseed_registry_defaults(apps, schema_editor):
    # The tables are dropped by the reverse of the schema operations; the purpose stays if a
    # consent names it (protected), like every vocabulary entry.
    Purpose = apps.get_model("governance", "Purpose")
    ConsentPurpose = apps.get_model("governance", "ConsentPurpose")
    if not ConsentPurpose.objects.filter(purpose_id=TRAINING_PURPOSE).exists():
        Purpose.objects.filter(code=TRAINING_PURPOSE).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0005_audit_append_only"),
    ]

    operations = [
        migrations.CreateModel(
            name="Clip",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("file", models.FileField(blank=True, max_length=255, upload_to="")),
                ("uri", models.CharField(blank=True, max_length=1000)),
                ("sha256", models.CharField(db_index=True, max_length=64)),
                ("size_bytes", models.PositiveBigIntegerField(blank=True, null=True)),
                ("duration_seconds", models.FloatField()),
                ("fps", models.FloatField()),
                ("frame_count", models.PositiveIntegerField()),
                ("width", models.PositiveIntegerField()),
                ("height", models.PositiveIntegerField()),
                ("notes", models.TextField(blank=True)),
                ("created_at", models.DateTimeField()),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["dataset", "id"],
            },
        ),
        migrations.CreateModel(
            name="ClipPerson",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "clip",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="governance.clip"
                    ),
                ),
                (
                    "consent",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.consentrecord",
                    ),
                ),
                (
                    "person",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, to="governance.person"
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="clip",
            name="persons",
            field=models.ManyToManyField(
                related_name="clips", through="governance.ClipPerson", to="governance.person"
            ),
        ),
        migrations.CreateModel(
            name="Dataset",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                ("description", models.TextField(blank=True)),
                ("created_at", models.DateTimeField()),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.AddField(
            model_name="clip",
            name="dataset",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="clips",
                to="governance.dataset",
            ),
        ),
        migrations.CreateModel(
            name="DatasetSnapshot",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("frozen_at", models.DateTimeField()),
                ("clip_count", models.PositiveIntegerField()),
                ("manifest_sha256", models.CharField(max_length=64)),
                ("excluded", models.JSONField(blank=True, default=list)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("frozen", "Frozen"),
                            (
                                "withdrawn",
                                "Withdrawn (a licence or consent it relies on was withdrawn)",
                            ),
                        ],
                        default="frozen",
                        max_length=16,
                    ),
                ),
                ("withdrawn_at", models.DateTimeField(blank=True, null=True)),
                ("withdraw_reason", models.TextField(blank=True)),
                (
                    "dataset",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="snapshots",
                        to="governance.dataset",
                    ),
                ),
                (
                    "frozen_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "territory",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.territory",
                    ),
                ),
            ],
            options={
                "ordering": ["-frozen_at", "-id"],
                "permissions": [
                    ("export_datasetsnapshot", "Can export a dataset snapshot's training manifest")
                ],
            },
        ),
        migrations.CreateModel(
            name="DatasetSnapshotConsent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "clip",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.clip",
                    ),
                ),
                (
                    "consent",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.consentrecord",
                    ),
                ),
                (
                    "person",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.person",
                    ),
                ),
                (
                    "snapshot",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="consents_relied_on",
                        to="governance.datasetsnapshot",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="License",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                ("spdx_id", models.CharField(blank=True, max_length=64)),
                ("terms_text", models.TextField(blank=True)),
                ("terms_file", models.FileField(blank=True, max_length=255, upload_to="")),
                ("terms_sha256", models.CharField(blank=True, max_length=64)),
                ("allows_training", models.BooleanField(default=False)),
                ("allows_evaluation", models.BooleanField(default=False)),
                ("allows_research_output", models.BooleanField(default=False)),
                ("allows_commercial_output", models.BooleanField(default=False)),
                ("attribution_text", models.TextField(blank=True)),
                ("valid_from", models.DateTimeField()),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
                (
                    "status",
                    models.CharField(
                        choices=[("active", "Active"), ("withdrawn", "Withdrawn")],
                        default="active",
                        max_length=16,
                    ),
                ),
                ("withdrawn_at", models.DateTimeField(blank=True, null=True)),
                ("withdraw_reason", models.TextField(blank=True)),
                ("created_at", models.DateTimeField()),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "withdrawn_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
                "permissions": [("withdraw_license", "Can withdraw a licence")],
            },
        ),
        migrations.CreateModel(
            name="DatasetSnapshotClip",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("position", models.PositiveIntegerField()),
                ("location", models.CharField(max_length=1000)),
                ("is_uri", models.BooleanField()),
                ("sha256", models.CharField(max_length=64)),
                ("fps", models.FloatField()),
                ("frame_count", models.PositiveIntegerField()),
                ("width", models.PositiveIntegerField()),
                ("height", models.PositiveIntegerField()),
                (
                    "clip",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.clip",
                    ),
                ),
                (
                    "snapshot",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="items",
                        to="governance.datasetsnapshot",
                    ),
                ),
                (
                    "licence",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.license",
                    ),
                ),
            ],
            options={
                "ordering": ["snapshot", "position"],
            },
        ),
        migrations.AddField(
            model_name="clip",
            name="licence",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="clips",
                to="governance.license",
            ),
        ),
        migrations.CreateModel(
            name="LicenseTerritory",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "license",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, to="governance.license"
                    ),
                ),
                (
                    "territory",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, to="governance.territory"
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "licence territories",
            },
        ),
        migrations.AddField(
            model_name="license",
            name="territories",
            field=models.ManyToManyField(
                related_name="+", through="governance.LicenseTerritory", to="governance.territory"
            ),
        ),
        migrations.CreateModel(
            name="Licensor",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                ("contact", models.CharField(blank=True, max_length=300)),
                ("url", models.URLField(blank=True)),
                ("notes", models.TextField(blank=True)),
                ("created_at", models.DateTimeField()),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["name"],
            },
        ),
        migrations.AddField(
            model_name="license",
            name="licensor",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="licenses",
                to="governance.licensor",
            ),
        ),
        migrations.CreateModel(
            name="ModelVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=100)),
                ("version", models.CharField(max_length=50)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("active", "Active"),
                            ("deprecated", "Deprecated (no new jobs; kept for reproduction)"),
                            ("blocked", "Blocked (its licence or lineage was withdrawn)"),
                        ],
                        default="active",
                        max_length=16,
                    ),
                ),
                (
                    "layout",
                    models.CharField(
                        choices=[
                            ("xnemo_safetensors", "Project safetensors layout"),
                            ("official_pth", "Official X-NeMo .pth set"),
                        ],
                        max_length=32,
                    ),
                ),
                ("architecture", models.JSONField(blank=True, default=dict)),
                ("weights_sha256", models.CharField(db_index=True, max_length=64)),
                ("folder", models.CharField(max_length=1000)),
                ("is_demonstration", models.BooleanField(default=False)),
                ("description", models.TextField(blank=True)),
                ("status_reason", models.TextField(blank=True)),
                ("status_changed_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField()),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "licence",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="model_versions",
                        to="governance.license",
                    ),
                ),
                (
                    "parent",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="children",
                        to="governance.modelversion",
                    ),
                ),
                (
                    "snapshots",
                    models.ManyToManyField(
                        blank=True, related_name="model_versions", to="governance.datasetsnapshot"
                    ),
                ),
                (
                    "status_changed_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["name", "-created_at", "-id"],
                "permissions": [
                    ("block_modelversion", "Can block a model version"),
                    ("deprecate_modelversion", "Can deprecate a model version"),
                ],
            },
        ),
        migrations.CreateModel(
            name="ModelWeightFile",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("relative_path", models.CharField(max_length=500)),
                ("sha256", models.CharField(max_length=64)),
                ("size_bytes", models.PositiveBigIntegerField()),
                (
                    "model_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="weight_files",
                        to="governance.modelversion",
                    ),
                ),
            ],
            options={
                "ordering": ["model_version", "relative_path"],
            },
        ),
        migrations.AddConstraint(
            model_name="clipperson",
            constraint=models.UniqueConstraint(fields=("clip", "person"), name="clip_person_once"),
        ),
        migrations.AddConstraint(
            model_name="datasetsnapshot",
            constraint=models.UniqueConstraint(
                fields=("dataset", "name"), name="snapshot_name_per_dataset"
            ),
        ),
        migrations.AddConstraint(
            model_name="datasetsnapshot",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "frozen"), ("withdrawn_at__isnull", True)),
                    models.Q(("status", "withdrawn"), ("withdrawn_at__isnull", False)),
                    _connector="OR",
                ),
                name="snapshot_withdrawn_iff_withdrawn_at",
            ),
        ),
        migrations.AddIndex(
            model_name="datasetsnapshotconsent",
            index=models.Index(fields=["consent"], name="governance__consent_ff2f9e_idx"),
        ),
        migrations.AddIndex(
            model_name="datasetsnapshotconsent",
            index=models.Index(fields=["person"], name="governance__person__426305_idx"),
        ),
        migrations.AddConstraint(
            model_name="datasetsnapshotconsent",
            constraint=models.UniqueConstraint(
                fields=("snapshot", "clip", "person"), name="snapshot_consent_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="datasetsnapshotclip",
            constraint=models.UniqueConstraint(
                fields=("snapshot", "clip"), name="snapshot_clip_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="datasetsnapshotclip",
            constraint=models.UniqueConstraint(
                fields=("snapshot", "position"), name="snapshot_position_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="clip",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("file", ""), models.Q(("uri", ""), _negated=True)),
                    models.Q(models.Q(("file", ""), _negated=True), ("uri", "")),
                    _connector="OR",
                ),
                name="clip_file_xor_uri",
            ),
        ),
        migrations.AddConstraint(
            model_name="clip",
            constraint=models.UniqueConstraint(
                fields=("dataset", "sha256"), name="clip_once_per_dataset"
            ),
        ),
        migrations.AddConstraint(
            model_name="licenseterritory",
            constraint=models.UniqueConstraint(
                fields=("license", "territory"), name="license_territory_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="license",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "active"), ("withdrawn_at__isnull", True)),
                    models.Q(("status", "withdrawn"), ("withdrawn_at__isnull", False)),
                    _connector="OR",
                ),
                name="license_withdrawn_iff_withdrawn_at",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelversion",
            constraint=models.UniqueConstraint(
                fields=("name", "version"), name="model_name_version_once"
            ),
        ),
        migrations.AddConstraint(
            model_name="modelversion",
            constraint=models.CheckConstraint(
                condition=models.Q(("parent", models.F("id")), _negated=True),
                name="model_not_own_parent",
            ),
        ),
        migrations.AddConstraint(
            model_name="modelweightfile",
            constraint=models.UniqueConstraint(
                fields=("model_version", "relative_path"), name="model_weight_file_once"
            ),
        ),
        migrations.RunPython(seed_registry_defaults, unseed_registry_defaults),
    ]
