"""Identity checks (governance.models.identity): thresholds per face backend, consent-binding face
matches and identity-leakage reports; seeds the thresholds of the two face backends and
registers the licences of their pretrained weights (insightface's packs: non-commercial
research only).

The match and review thresholds below are the backends' own declarations in
reenactment/engine/faces.py (DLIB_THRESHOLDS, INSIGHTFACE_THRESHOLDS; a test checks they
agree); the leakage values are governance's defaults (governance/services/identity.py)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

DLIB_LICENSOR = "dlib project (Davis E. King)"
INSIGHTFACE_LICENSOR = "InsightFace project (deepinsight)"
DLIB_LICENCE = "dlib face models (CC0 1.0)"
INSIGHTFACE_LICENCE = "insightface pretrained packs (non-commercial research)"

LEAKAGE_DEFAULTS = {
    "leakage_margin": 0.10,
    "leakage_review_margin": 0.05,
    "max_faceless_share": 0.25,
    "min_sampled_frames": 8,
}

POLICIES = [
    {
        "backend": "dlib",
        "licence": DLIB_LICENCE,
        "match_threshold": 0.45,
        "review_threshold": 0.35,
        "licence_text": (
            "dlib models: public domain / CC0 1.0 (mmod CNN detector, 5-point landmarks, ResNet "
            "descriptor; face_recognition_models); dlib library: Boost Software License 1.0. "
            "The 68-point landmark model (non-commercial) is never loaded."
        ),
    },
    {
        "backend": "insightface",
        "licence": INSIGHTFACE_LICENCE,
        "match_threshold": 0.40,
        "review_threshold": 0.30,
        "licence_text": (
            "insightface pretrained model packs (buffalo_l: SCRFD det_10g, ArcFace w600k_r50): "
            "non-commercial research only; insightface library code: MIT."
        ),
    },
]


def seed_face_backends(apps, schema_editor):
    from django.utils import timezone

    Territory = apps.get_model("governance", "Territory")
    Licensor = apps.get_model("governance", "Licensor")
    License = apps.get_model("governance", "License")
    LicenseTerritory = apps.get_model("governance", "LicenseTerritory")
    FaceThresholdPolicy = apps.get_model("governance", "FaceThresholdPolicy")
    now = timezone.now()
    worldwide, _ = Territory.objects.get_or_create(code="WW", defaults={"label": "Worldwide"})
    dlib_licensor, _ = Licensor.objects.get_or_create(
        name=DLIB_LICENSOR,
        defaults={
            "url": "http://dlib.net/",
            "notes": "dlib and the face_recognition_models files the dlib face backend loads.",
            "created_at": now,
        },
    )
    insightface_licensor, _ = Licensor.objects.get_or_create(
        name=INSIGHTFACE_LICENSOR,
        defaults={
            "url": "https://github.com/deepinsight/insightface",
            "notes": "The insightface library and its pretrained model packs (buffalo_l).",
            "created_at": now,
        },
    )
    dlib_licence, _ = License.objects.get_or_create(
        name=DLIB_LICENCE,
        defaults={
            "licensor": dlib_licensor,
            "spdx_id": "CC0-1.0",
            "terms_text": (
                "The dlib face models used (mmod human face detector, 5-point shape predictor, "
                "ResNet face recognition model v1, as shipped by face_recognition_models) are "
                "in the public domain (CC0 1.0): any use, commercial included. The 68-point "
                "landmark model, trained on iBUG 300-W (non-commercial), is never loaded. The "
                "dlib library itself is under the Boost Software License 1.0."
            ),
            "allows_training": True,
            "allows_evaluation": True,
            "allows_research_output": True,
            "allows_commercial_output": True,
            "valid_from": now,
            "created_at": now,
        },
    )
    insightface_licence, _ = License.objects.get_or_create(
        name=INSIGHTFACE_LICENCE,
        defaults={
            "licensor": insightface_licensor,
            "spdx_id": "",
            "terms_text": (
                "insightface's pretrained model packs (e.g. buffalo_l: SCRFD det_10g and ArcFace "
                "w600k_r50) are available for non-commercial research purposes only; the "
                "insightface library code is MIT-licensed. Using the insightface face backend "
                "for identity checks of commercial-purpose jobs needs a commercial licence from "
                "the InsightFace project."
            ),
            "allows_training": False,
            "allows_evaluation": True,
            "allows_research_output": True,
            "allows_commercial_output": False,
            "attribution_text": "Face recognition: InsightFace (deepinsight), non-commercial research use.",
            "valid_from": now,
            "created_at": now,
        },
    )
    for licence in (dlib_licence, insightface_licence):
        LicenseTerritory.objects.get_or_create(license=licence, territory=worldwide)
    licences = {DLIB_LICENCE: dlib_licence, INSIGHTFACE_LICENCE: insightface_licence}
    for entry in POLICIES:
        values = {k: v for k, v in entry.items() if k not in ("backend", "licence")}
        FaceThresholdPolicy.objects.get_or_create(
            backend=entry["backend"],
            defaults={
                **values,
                **LEAKAGE_DEFAULTS,
                "licence": licences[entry["licence"]],
                "created_at": now,
                "updated_at": now,
            },
        )


def unseed_face_backends(apps, schema_editor):
    # The policies' table is dropped next; the licence rows go too unless something else
    # (a model version, a clip) has come to rely on them since.
    from django.db.models import ProtectedError

    FaceThresholdPolicy = apps.get_model("governance", "FaceThresholdPolicy")
    License = apps.get_model("governance", "License")
    Licensor = apps.get_model("governance", "Licensor")
    FaceThresholdPolicy.objects.all().delete()
    for name in (DLIB_LICENCE, INSIGHTFACE_LICENCE):
        try:
            License.objects.filter(name=name).delete()
        except ProtectedError:
            pass
    for name in (DLIB_LICENSOR, INSIGHTFACE_LICENSOR):
        Licensor.objects.filter(name=name, licenses__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0006_model_registry"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="action",
            field=models.PositiveIntegerField(
                choices=[
                    (1001, "role.grant"),
                    (1002, "role.revoke"),
                    (1003, "permission.grant"),
                    (1004, "permission.revoke"),
                    (1101, "person.create"),
                    (1102, "person.reference_photo_download"),
                    (1201, "consent.record"),
                    (1202, "consent.supersede"),
                    (1203, "consent.revoke"),
                    (1204, "consent.evidence_download"),
                    (1301, "approval_policy.create"),
                    (1302, "approval_policy.update"),
                    (1311, "approval_request.create"),
                    (1312, "approval_step.decide"),
                    (1313, "approval_request.approve"),
                    (1314, "approval_request.reject"),
                    (1315, "approval_request.request_changes"),
                    (1316, "approval_request.cancel"),
                    (1401, "audit.export"),
                    (1501, "vocabulary.create"),
                    (1502, "vocabulary.update"),
                    (2001, "render_job.submit"),
                    (2002, "render_job.await_approval"),
                    (2003, "render_job.approve"),
                    (2004, "render_job.queue"),
                    (2005, "render_job.start"),
                    (2006, "render_job.generate"),
                    (2007, "render_job.verify"),
                    (2008, "render_job.publish"),
                    (2009, "render_job.reject"),
                    (2010, "render_job.quarantine"),
                    (2011, "render_job.fail"),
                    (2012, "render_job.cancel"),
                    (2013, "render_job.withdraw"),
                    (2021, "render_job.restart"),
                    (2022, "render_job.verification_step"),
                    (2023, "render_job.download_link"),
                    (2024, "render_job.download"),
                    (2025, "render_job.retry"),
                    (2101, "webhook_endpoint.create"),
                    (2102, "webhook_endpoint.disable"),
                    (3201, "provenance.sign"),
                    (3001, "model_version.register"),
                    (3002, "model_version.block"),
                    (3003, "model_version.deprecate"),
                    (3101, "licensor.create"),
                    (3102, "license.create"),
                    (3103, "license.withdraw"),
                    (3111, "dataset.create"),
                    (3112, "clip.add"),
                    (3121, "dataset_snapshot.freeze"),
                    (3122, "dataset_snapshot.withdraw"),
                    (3123, "dataset_snapshot.export"),
                    (3301, "leakage_report.create"),
                    (3302, "leakage_report.release"),
                    (3303, "leakage_report.reject"),
                    (3401, "face_match.record"),
                    (3402, "face_match.reject"),
                    (3411, "face_threshold_policy.create"),
                    (3412, "face_threshold_policy.update"),
                ],
                db_index=True,
            ),
        ),
        migrations.CreateModel(
            name="FaceMatchRecord",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("subject_type", models.CharField(max_length=100)),
                ("subject_id", models.CharField(max_length=64)),
                (
                    "check_type",
                    models.CharField(
                        choices=[
                            ("portrait_vs_subject", "Portrait vs the portrait subject's reference"),
                            ("driving_vs_performer", "Driving video vs the performer's reference"),
                        ],
                        max_length=32,
                    ),
                ),
                ("reference_sha256", models.CharField(max_length=64)),
                ("candidate_sha256", models.CharField(blank=True, max_length=64)),
                (
                    "verdict",
                    models.CharField(
                        choices=[
                            ("match", "Match"),
                            ("review", "Needs a human look"),
                            ("no_match", "No match"),
                        ],
                        max_length=16,
                    ),
                ),
                ("reasons", models.JSONField(default=list)),
                ("scores", models.JSONField()),
                ("thresholds", models.JSONField()),
                ("backend", models.CharField(max_length=32)),
                ("backend_fingerprint", models.CharField(max_length=64)),
                ("backend_licence", models.TextField(blank=True)),
                ("backend_info", models.JSONField()),
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
                    "person",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="face_matches",
                        to="governance.person",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "indexes": [
                    models.Index(
                        fields=["subject_type", "subject_id"], name="governance__subject_6606de_idx"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="FaceThresholdPolicy",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("backend", models.CharField(max_length=32, unique=True)),
                ("match_threshold", models.FloatField()),
                ("review_threshold", models.FloatField()),
                ("leakage_margin", models.FloatField()),
                ("leakage_review_margin", models.FloatField()),
                ("max_faceless_share", models.FloatField()),
                ("min_sampled_frames", models.PositiveSmallIntegerField()),
                ("licence_text", models.TextField(blank=True)),
                ("created_at", models.DateTimeField()),
                ("updated_at", models.DateTimeField()),
                (
                    "licence",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="governance.license",
                    ),
                ),
                (
                    "updated_by",
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
                "verbose_name_plural": "face threshold policies",
                "ordering": ["backend"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            ("review_threshold__lte", models.F("match_threshold")),
                            ("match_threshold__lte", 1.0),
                            ("review_threshold__gte", -1.0),
                        ),
                        name="face_threshold_review_below_match",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("leakage_review_margin__gte", 0.0),
                            ("leakage_review_margin__lte", models.F("leakage_margin")),
                        ),
                        name="face_threshold_leakage_margins_ordered",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("max_faceless_share__gte", 0.0), ("max_faceless_share__lte", 1.0)
                        ),
                        name="face_threshold_faceless_share_is_a_share",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("min_sampled_frames__gte", 1)),
                        name="face_threshold_min_one_frame",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="LeakageReport",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("subject_type", models.CharField(max_length=100)),
                ("subject_id", models.CharField(max_length=64)),
                (
                    "verdict",
                    models.CharField(
                        choices=[("pass", "Pass"), ("review", "Needs review"), ("fail", "Fail")],
                        max_length=8,
                    ),
                ),
                ("reasons", models.JSONField(default=list)),
                ("portrait_stats", models.JSONField(blank=True, null=True)),
                ("performer_stats", models.JSONField(blank=True, null=True)),
                ("baseline_similarity", models.FloatField()),
                ("time_series", models.JSONField(default=list)),
                ("total_frames", models.PositiveIntegerField()),
                ("sampled_frames", models.PositiveIntegerField()),
                ("faceless_frames", models.PositiveIntegerField()),
                ("faceless_share", models.FloatField()),
                ("sampling", models.CharField(blank=True, max_length=200)),
                ("thresholds", models.JSONField()),
                ("backend", models.CharField(max_length=32)),
                ("backend_fingerprint", models.CharField(max_length=64)),
                ("backend_licence", models.TextField(blank=True)),
                ("backend_info", models.JSONField()),
                ("created_at", models.DateTimeField()),
                (
                    "review_decision",
                    models.CharField(
                        blank=True,
                        choices=[("release", "Release"), ("reject", "Reject")],
                        max_length=8,
                    ),
                ),
                ("review_reason", models.TextField(blank=True)),
                ("reviewed_at", models.DateTimeField(blank=True, null=True)),
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
                    "reviewed_by",
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
                "ordering": ["-created_at", "-id"],
                "permissions": [
                    ("review_leakagereport", "Can release or reject an output flagged for review")
                ],
                "indexes": [
                    models.Index(
                        fields=["subject_type", "subject_id"], name="governance__subject_b8d22e_idx"
                    ),
                    models.Index(
                        fields=["verdict", "review_decision"], name="governance__verdict_9eddb7_idx"
                    ),
                ],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(
                                ("review_decision", ""),
                                ("reviewed_at__isnull", True),
                                ("reviewed_by__isnull", True),
                            ),
                            models.Q(
                                ("reviewed_at__isnull", False),
                                ("reviewed_by__isnull", False),
                                ("verdict", "review"),
                                ("review_decision__in", ["release", "reject"]),
                                models.Q(("review_reason", ""), _negated=True),
                            ),
                            _connector="OR",
                        ),
                        name="leakage_review_only_on_review_with_reason",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            ("faceless_share__gte", 0.0), ("faceless_share__lte", 1.0)
                        ),
                        name="leakage_faceless_share_is_a_share",
                    ),
                ],
            },
        ),
        migrations.RunPython(seed_face_backends, unseed_face_backends),
    ]
