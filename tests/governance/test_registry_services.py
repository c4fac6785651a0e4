"""Licences, snapshots, the withdrawal cascade and the licence-aware use gate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from config.api import ApplicationError
from governance.audit_codes import AuditAction
from governance.hooks import (
    HookFailedError,
    ModelBlocked,
    register_model_blocked_handler,
    unregister_model_blocked_handler,
)
from governance.models import (
    AuditEvent,
    Dataset,
    DatasetSnapshot,
    DatasetSnapshotConsent,
    License,
    LicenseStatus,
    ModelVersionStatus,
    Purpose,
    SnapshotStatus,
)
from governance.selectors.registry import (
    ModelVersionUnusableError,
    model_version_assert_usable,
    model_version_lineage,
)
from governance.services.consents import consent_revoke, consent_supersede
from governance.services.datasets import dataset_snapshot_freeze
from governance.services.licences import license_withdraw, registry_defaults_ensure
from governance.services.registry import (
    model_version_block_by_hand,
    model_version_deprecate,
)
from tests.factories import create_person, form_upload
from tests.governance.registry_helpers import (
    SYNTHFACE_LICENCE,
    XNEMO_LICENCE,
    add_uri_clip,
    consenting_person,
    make_dataset,
    make_licence,
    make_snapshot,
    register,
    seeded_licence,
    shared_tiny_model_dir,
    training_consent,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def steward(users):
    return users["data_steward"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return shared_tiny_model_dir(tmp_path_factory)


def events(action: AuditAction, target_type: str | None = None) -> list[AuditEvent]:
    qs = AuditEvent.objects.filter(action=action)
    if target_type:
        qs = qs.filter(target_type=target_type)
    return list(qs.order_by("sequence"))


@pytest.fixture
def blocked_events():
    """What the jobs side's model-blocked handler would receive."""
    received: list[ModelBlocked] = []
    uid = register_model_blocked_handler(received.append, uid="test.model_blocked")
    yield received
    unregister_model_blocked_handler(uid)


# --- seeded rows ----------------------------------------------------------------------------


def test_the_migration_registers_the_synthface_and_xnemo_licences():
    synth = seeded_licence(SYNTHFACE_LICENCE)
    assert synth.allowed_uses() == [
        "training",
        "evaluation",
        "research_output",
        "commercial_output",
    ]
    assert [t.pk for t in synth.territories.all()] == ["WW"]
    xnemo = seeded_licence(XNEMO_LICENCE)
    assert xnemo.allowed_uses() == ["evaluation", "research_output"]
    assert not xnemo.allows_commercial_output and not xnemo.allows_training
    assert Dataset.objects.filter(name="SynthFace").exists()
    training = Purpose.objects.get(pk="model_training")
    assert not training.is_commercial
    # The same rows, re-created through the services only where missing.
    before = AuditEvent.objects.count()
    defaults = registry_defaults_ensure()
    assert (defaults.synthface_licence, defaults.xnemo_licence) == (synth, xnemo)
    assert defaults.synthface_dataset.name == "SynthFace"
    assert AuditEvent.objects.count() == before


# --- licences -------------------------------------------------------------------------------


def test_a_licence_is_recorded_with_its_uses_and_audited(steward):
    licence = make_licence(
        acting_user=steward, uses=["training", "evaluation"], territories=["DE", "FR"]
    )
    assert licence.allowed_uses() == ["training", "evaluation"]
    assert sorted(t.pk for t in licence.territories.all()) == ["DE", "FR"]
    (event,) = events(AuditAction.LICENSE_CREATE)
    assert event.actor == steward and event.target_id == str(licence.pk)
    assert event.payload["allowed_uses"] == ["training", "evaluation"]


def test_a_licence_needs_known_uses_territories_and_terms(steward):
    from governance.services.licences import license_create, licensor_create

    licensor = licensor_create(name="Agency", acting_user=steward)
    with pytest.raises(ValidationError) as info:
        license_create(
            licensor=licensor,
            name="",
            allowed_uses=["printing"],
            territories=["WW", "DE"],
            expires_at=timezone.now() - timedelta(days=400),
            acting_user=steward,
        )
    assert set(info.value.message_dict) == {
        "name",
        "allowed_uses",
        "territories",
        "expires_at",
        "terms_text",
    }
    assert not License.objects.filter(licensor=licensor).exists()


# --- snapshots ------------------------------------------------------------------------------


def test_freezing_keeps_only_eligible_clips_and_records_the_consents(steward, compliance):
    dataset = make_dataset(acting_user=steward)
    good = make_licence(acting_user=steward)
    no_training = make_licence(acting_user=steward, uses=["evaluation", "research_output"])
    expired = make_licence(
        acting_user=steward,
        valid_from=timezone.now() - timedelta(days=60),
        expires_at=timezone.now() - timedelta(days=1),
    )
    person, consent = consenting_person(acting_user=steward, officer=compliance)
    unconsented = create_person(acting_user=compliance, full_name="No Training Consent")
    research_only = create_person(acting_user=compliance, full_name="Research Only")
    training_consent(person=research_only, acting_user=compliance, purposes=["research"])

    eligible = add_uri_clip(dataset=dataset, licence=good, acting_user=steward, persons=[person])
    add_uri_clip(dataset=dataset, licence=no_training, acting_user=steward, persons=[person])
    add_uri_clip(dataset=dataset, licence=expired, acting_user=steward)
    add_uri_clip(dataset=dataset, licence=good, acting_user=steward, persons=[unconsented])
    add_uri_clip(dataset=dataset, licence=good, acting_user=steward, persons=[research_only])
    no_persons = add_uri_clip(dataset=dataset, licence=good, acting_user=steward)

    snapshot = dataset_snapshot_freeze(dataset=dataset, name="v1", acting_user=steward)

    assert snapshot.status == SnapshotStatus.FROZEN
    assert [item.clip_id for item in snapshot.items.order_by("position")] == [
        eligible.pk,
        no_persons.pk,
    ]
    assert snapshot.items.get(clip=eligible).sha256 == eligible.sha256
    relied = DatasetSnapshotConsent.objects.get(snapshot=snapshot)
    assert (relied.clip_id, relied.person_id, relied.consent_id) == (
        eligible.pk,
        person.pk,
        consent.pk,
    )
    reasons = {tuple(entry["reasons"]) for entry in snapshot.excluded}
    joined = " | ".join(r for entry in reasons for r in entry)
    assert "does not allow training" in joined
    assert "expired" in joined
    assert "has no consent on record. (no_consent)" in joined
    assert "(purpose)" in joined
    (event,) = events(AuditAction.DATASET_SNAPSHOT_FREEZE)
    assert event.payload["clip_ids"] == [eligible.pk, no_persons.pk]
    assert event.payload["consent_ids"] == [consent.pk]
    assert event.payload["manifest_sha256"] == snapshot.manifest_sha256
    assert len(snapshot.manifest_sha256) == 64


def test_a_snapshot_without_an_eligible_clip_is_refused(steward):
    dataset = make_dataset(acting_user=steward)
    add_uri_clip(
        dataset=dataset,
        licence=seeded_licence(XNEMO_LICENCE),
        acting_user=steward,
    )
    with pytest.raises(ApplicationError) as info:
        dataset_snapshot_freeze(dataset=dataset, name="v1", acting_user=steward)
    assert info.value.code == "snapshot_empty"
    assert "does not allow training" in info.value.extra["excluded"][0]["reasons"][0]
    assert not DatasetSnapshot.objects.filter(dataset=dataset).exists()


# --- the withdrawal cascade -----------------------------------------------------------------


def test_withdrawing_a_licence_flags_snapshots_and_blocks_dependent_models(
    steward, compliance, tiny_model_dir, blocked_events
):
    data_licence = make_licence(acting_user=steward)
    other_licence = make_licence(acting_user=steward)
    weights_licence = make_licence(acting_user=steward)
    affected = make_snapshot(acting_user=steward, officer=compliance, licence=data_licence)
    untouched = make_snapshot(acting_user=steward, officer=compliance, licence=other_licence)
    trained = register(
        folder=tiny_model_dir, licence=weights_licence, snapshots=[affected], acting_user=steward
    )
    child = register(
        folder=tiny_model_dir, licence=weights_licence, parent=trained, acting_user=steward
    )
    unrelated = register(
        folder=tiny_model_dir, licence=weights_licence, snapshots=[untouched], acting_user=steward
    )
    under_licence = register(folder=tiny_model_dir, licence=data_licence, acting_user=steward)

    result = license_withdraw(license=data_licence, reason="Licensor ended it", acting_user=steward)

    data_licence.refresh_from_db()
    assert data_licence.status == LicenseStatus.WITHDRAWN
    assert result.snapshot_ids == [affected.pk]
    assert sorted(result.model_version_ids) == sorted([trained.pk, child.pk, under_licence.pk])
    for model in (trained, child, under_licence):
        model.refresh_from_db()
        assert model.status == ModelVersionStatus.BLOCKED
        assert data_licence.name in model.status_reason
    unrelated.refresh_from_db()
    untouched.refresh_from_db()
    affected.refresh_from_db()
    assert unrelated.status == ModelVersionStatus.ACTIVE
    assert untouched.status == SnapshotStatus.FROZEN
    assert affected.status == SnapshotStatus.WITHDRAWN
    # Audited: the withdrawal, the flagged snapshot, each block with its cause.
    (withdraw,) = events(AuditAction.LICENSE_WITHDRAW)
    assert withdraw.payload["snapshots_flagged"] == [affected.pk]
    (flag,) = events(AuditAction.DATASET_SNAPSHOT_WITHDRAW)
    assert flag.target_id == str(affected.pk)
    assert flag.payload["cause"] == {"license_id": data_licence.pk}
    blocks = {e.target_id: e.payload for e in events(AuditAction.MODEL_VERSION_BLOCK)}
    assert set(blocks) == {str(trained.pk), str(child.pk), str(under_licence.pk)}
    assert blocks[str(trained.pk)]["cause"]["snapshot_id"] == affected.pk
    assert blocks[str(child.pk)]["cause"]["via_ancestor"] == 1
    assert blocks[str(trained.pk)]["reported_to"] == ["test.model_blocked"]
    # The jobs side was told about each model, once.
    assert sorted(e.model_version_id for e in blocked_events) == sorted(
        [trained.pk, child.pk, under_licence.pk]
    )
    # A withdrawn licence cannot be withdrawn again.
    with pytest.raises(ApplicationError) as info:
        license_withdraw(license=data_licence, reason="again", acting_user=steward)
    assert info.value.code == "license_not_active"


def test_a_failing_jobs_handler_rolls_the_whole_withdrawal_back(steward, tiny_model_dir):
    licence = make_licence(acting_user=steward)
    model = register(folder=tiny_model_dir, licence=licence, acting_user=steward)

    def refuse(event: ModelBlocked) -> None:
        raise RuntimeError("jobs side down")

    uid = register_model_blocked_handler(refuse, uid="test.refuse")
    try:
        with pytest.raises(HookFailedError):
            license_withdraw(license=licence, reason="ended", acting_user=steward)
    finally:
        unregister_model_blocked_handler(uid)
    licence.refresh_from_db()
    model.refresh_from_db()
    assert licence.status == LicenseStatus.ACTIVE
    assert model.status == ModelVersionStatus.ACTIVE
    assert not events(AuditAction.LICENSE_WITHDRAW)


def test_revoking_a_training_consent_flags_the_snapshot_and_blocks_its_models(
    steward, compliance, tiny_model_dir, blocked_events
):
    dataset = make_dataset(acting_user=steward)
    licence = make_licence(acting_user=steward)
    person, consent = consenting_person(acting_user=steward, officer=compliance)
    add_uri_clip(dataset=dataset, licence=licence, acting_user=steward, persons=[person])
    snapshot = dataset_snapshot_freeze(dataset=dataset, name="v1", acting_user=steward)
    model = register(
        folder=tiny_model_dir, licence=licence, snapshots=[snapshot], acting_user=steward
    )

    consent_revoke(consent=consent, reason="Withdrew consent", acting_user=compliance)

    snapshot.refresh_from_db()
    model.refresh_from_db()
    assert snapshot.status == SnapshotStatus.WITHDRAWN
    assert f"Consent #{consent.pk}" in snapshot.withdraw_reason
    assert model.status == ModelVersionStatus.BLOCKED
    (flag,) = events(AuditAction.DATASET_SNAPSHOT_WITHDRAW)
    assert flag.actor == compliance
    assert flag.payload["cause"] == {"consent_id": consent.pk, "person_id": person.pk}
    assert [e.model_version_id for e in blocked_events] == [model.pk]
    with pytest.raises(ModelVersionUnusableError) as info:
        model_version_assert_usable(model_version=model, purpose="research")
    assert info.value.code == "model_version_blocked"


def test_superseding_a_training_consent_flags_only_when_training_is_no_longer_covered(
    steward, compliance
):
    licence = make_licence(acting_user=steward)
    person, consent = consenting_person(acting_user=steward, officer=compliance)
    dataset = make_dataset(acting_user=steward)
    add_uri_clip(dataset=dataset, licence=licence, acting_user=steward, persons=[person])
    snapshot = dataset_snapshot_freeze(dataset=dataset, name="v1", acting_user=steward)
    scope = {
        "role": "both",
        "channels": ["internal"],
        "territories": ["WW"],
        "commercial_use": False,
        "valid_from": timezone.now() - timedelta(days=1),
        "signed_form": form_upload(),
    }

    renewed = consent_supersede(
        consent=consent,
        reason="Renewed",
        purposes=["model_training", "research"],
        acting_user=compliance,
        **scope,
    )
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.FROZEN

    # The snapshot relied on the first record; narrowing its replacement flags it all the same.
    consent_supersede(
        consent=renewed,
        reason="No more training",
        purposes=["research"],
        acting_user=compliance,
        **{**scope, "signed_form": form_upload()},
    )
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.WITHDRAWN
    assert f"Consent #{renewed.pk}" in snapshot.withdraw_reason
    # And a fresh freeze leaves the clip out.
    with pytest.raises(ApplicationError) as info:
        dataset_snapshot_freeze(dataset=dataset, name="v2", acting_user=steward)
    assert info.value.code == "snapshot_empty"
    assert "(purpose)" in info.value.extra["excluded"][0]["reasons"][0]


def test_superseding_the_consent_a_snapshot_relies_on_with_a_narrower_one_flags_it(
    steward, compliance
):
    licence = make_licence(acting_user=steward)
    person, consent = consenting_person(acting_user=steward, officer=compliance)
    dataset = make_dataset(acting_user=steward)
    add_uri_clip(dataset=dataset, licence=licence, acting_user=steward, persons=[person])
    snapshot = dataset_snapshot_freeze(dataset=dataset, name="v1", acting_user=steward)
    consent_supersede(
        consent=consent,
        reason="No more training",
        role="both",
        purposes=["research"],
        channels=["internal"],
        territories=["WW"],
        commercial_use=False,
        valid_from=timezone.now() - timedelta(days=1),
        signed_form=form_upload(),
        acting_user=compliance,
    )
    snapshot.refresh_from_db()
    assert snapshot.status == SnapshotStatus.WITHDRAWN
    assert "superseded" in snapshot.withdraw_reason


# --- the use gate ---------------------------------------------------------------------------


def test_commercial_output_on_the_non_commercial_xnemo_model_is_refused_naming_the_licence(
    steward, tiny_model_dir
):
    official = register(
        folder=tiny_model_dir, licence=seeded_licence(XNEMO_LICENCE), acting_user=steward
    )
    with pytest.raises(ModelVersionUnusableError) as info:
        model_version_assert_usable(model_version=official, purpose="marketing")
    error = info.value
    assert error.code == "licence_forbids"
    assert error.status_code == 409
    assert error.extra["license_name"] == XNEMO_LICENCE
    assert error.extra["condition"] == "use"
    assert XNEMO_LICENCE in error.message and "commercial output" in error.message
    # Research output is what it allows.
    clearance = model_version_assert_usable(model_version=official, purpose="research")
    assert clearance.use == "research_output"
    assert clearance.attributions == ("X-NeMo (ByteDance), licensed under CC BY-NC 4.0.",)


def test_a_model_trained_on_synthface_may_make_commercial_output(steward, tiny_model_dir):
    synth = seeded_licence(SYNTHFACE_LICENCE)
    dataset = Dataset.objects.get(name="SynthFace")
    add_uri_clip(dataset=dataset, licence=synth, acting_user=steward)
    snapshot = dataset_snapshot_freeze(dataset=dataset, name="synth-v1", acting_user=steward)
    model = register(
        folder=tiny_model_dir, licence=synth, snapshots=[snapshot], acting_user=steward
    )

    clearance = model_version_assert_usable(
        model_version=model, purpose="marketing", territory="DE"
    )
    assert clearance.use == "commercial_output"
    assert clearance.licence_ids == (synth.pk,)


def test_the_gate_walks_the_training_data_and_the_parent_models(
    steward, compliance, tiny_model_dir
):
    synth = seeded_licence(SYNTHFACE_LICENCE)
    research_data = make_licence(
        acting_user=steward, uses=["training", "research_output"], name="Research clips"
    )
    snapshot = make_snapshot(acting_user=steward, officer=compliance, licence=research_data)
    on_research_data = register(
        folder=tiny_model_dir, licence=synth, snapshots=[snapshot], acting_user=steward
    )
    with pytest.raises(ModelVersionUnusableError) as info:
        model_version_assert_usable(model_version=on_research_data, purpose="entertainment")
    assert info.value.extra["license_name"] == "Research clips"
    assert "training data of snapshot" in info.value.message

    fine_tuned = register(
        folder=tiny_model_dir,
        licence=synth,
        parent=register(
            folder=tiny_model_dir, licence=seeded_licence(XNEMO_LICENCE), acting_user=steward
        ),
        acting_user=steward,
    )
    with pytest.raises(ModelVersionUnusableError) as info:
        model_version_assert_usable(model_version=fine_tuned, purpose="marketing")
    assert info.value.extra["license_name"] == XNEMO_LICENCE
    assert info.value.extra["where"].startswith("weights of xnemo")
    lineage = model_version_lineage(model_version=fine_tuned)
    assert lineage["parent"]["licence"]["name"] == XNEMO_LICENCE


def test_the_gate_refuses_expired_and_out_of_territory_licences(steward, tiny_model_dir):
    regional = make_licence(acting_user=steward, territories=["DE"])
    model = register(folder=tiny_model_dir, licence=regional, acting_user=steward)
    model_version_assert_usable(model_version=model, purpose="marketing", territory="DE")
    with pytest.raises(ModelVersionUnusableError) as info:
        model_version_assert_usable(model_version=model, purpose="marketing", territory="US")
    assert info.value.extra["condition"] == "territory"
    later = timezone.now() + timedelta(days=400)
    expiring = make_licence(acting_user=steward, expires_at=timezone.now() + timedelta(days=10))
    model = register(folder=tiny_model_dir, licence=expiring, acting_user=steward)
    with pytest.raises(ModelVersionUnusableError) as info:
        model_version_assert_usable(model_version=model, purpose="research", at=later)
    assert info.value.extra["condition"] == "expired"


def test_blocked_and_deprecated_models_take_no_new_jobs(steward, tiny_model_dir, blocked_events):
    synth = seeded_licence(SYNTHFACE_LICENCE)
    blocked = register(folder=tiny_model_dir, licence=synth, acting_user=steward)
    model_version_block_by_hand(
        model_version=blocked, reason="Security review", acting_user=steward
    )
    with pytest.raises(ModelVersionUnusableError) as info:
        model_version_assert_usable(model_version=blocked, purpose="research")
    assert info.value.code == "model_version_blocked"
    assert "Security review" in info.value.message
    assert [e.reason for e in blocked_events] == ["Security review"]
    with pytest.raises(ApplicationError) as again:
        model_version_block_by_hand(model_version=blocked, reason="twice", acting_user=steward)
    assert again.value.code == "model_version_blocked"

    old = register(folder=tiny_model_dir, licence=synth, acting_user=steward)
    model_version_deprecate(model_version=old, reason="Superseded by 2.0", acting_user=steward)
    with pytest.raises(ModelVersionUnusableError) as info:
        model_version_assert_usable(model_version=old, purpose="research")
    assert info.value.code == "model_version_deprecated"
    (event,) = events(AuditAction.MODEL_VERSION_DEPRECATE)
    assert event.payload["reason"] == "Superseded by 2.0"
