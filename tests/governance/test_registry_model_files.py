"""Registering real model folders: hashes, compatibility through the engine's loader, licence
and lineage; tampered and incompatible folders are refused with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from safetensors.torch import load_file, save_file

from governance.audit_codes import AuditAction
from governance.integrations.model_files import files_fingerprint
from governance.models import AuditEvent, ModelLayout, ModelVersion
from governance.services.licences import license_withdraw
from governance.services.registry import (
    ModelFilesRejectedError,
    model_version_register,
    model_version_verify_files,
)
from tests.governance.registry_helpers import (
    SYNTHFACE_LICENCE,
    XNEMO_LICENCE,
    folder_checksums,
    make_licence,
    make_snapshot,
    official_model_folder,
    register,
    seeded_licence,
    shared_tiny_model_dir,
)

pytestmark = pytest.mark.django_db

REFERENCE_WEIGHTS = "reference_unet/diffusion_pytorch_model.safetensors"


@pytest.fixture
def steward(users):
    return users["data_steward"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return shared_tiny_model_dir(tmp_path_factory)


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_our_safetensors_layout_is_registered_with_every_file_hash(steward, tiny_model_dir):
    checksums = folder_checksums(tiny_model_dir)
    model = model_version_register(
        name="xnemo-tiny",
        version="1.0",
        folder=tiny_model_dir,
        licence=seeded_licence(SYNTHFACE_LICENCE),
        checksums=checksums,
        acting_user=steward,
    )
    assert model.layout == ModelLayout.XNEMO_SAFETENSORS
    assert dict(model.weight_files.values_list("relative_path", "sha256")) == checksums
    assert model.weights_sha256 == files_fingerprint(checksums)
    assert model.folder == str(tiny_model_dir.resolve())
    assert model.architecture["reference_unet"]["block_out_channels"]
    assert model.architecture["components"][:3] == [
        "reference_unet",
        "denoising_unet",
        "motion_encoder",
    ]
    assert not model.is_demonstration
    event = AuditEvent.objects.get(action=AuditAction.MODEL_VERSION_REGISTER)
    assert event.payload["weights_sha256"] == model.weights_sha256
    assert event.payload["checksums_verified"] is True
    assert event.payload["files"] == checksums
    assert model_version_verify_files(model_version=model) == model.weights_sha256


def test_a_changed_byte_is_refused_against_the_pinned_hashes(steward, model_copy):
    checksums = folder_checksums(model_copy)
    weights = model_copy / REFERENCE_WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01  # a tensor byte, the file stays readable
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelFilesRejectedError) as info:
        model_version_register(
            name="xnemo-tiny",
            version="tampered",
            folder=model_copy,
            licence=seeded_licence(SYNTHFACE_LICENCE),
            checksums=checksums,
            acting_user=steward,
        )
    assert info.value.code == "model_files_hash_mismatch"
    assert f"{REFERENCE_WEIGHTS}: SHA-256 mismatch" in info.value.message
    assert not ModelVersion.objects.exists()


def test_a_file_changed_after_registration_is_caught_before_use(steward, model_copy):
    model = register(
        folder=model_copy, licence=seeded_licence(SYNTHFACE_LICENCE), acting_user=steward
    )
    (model_copy / "motion_encoder" / "config.json").write_text("{}")
    with pytest.raises(ModelFilesRejectedError) as info:
        model_version_verify_files(model_version=model)
    assert "motion_encoder/config.json: SHA-256 mismatch" in info.value.message


def test_a_renamed_key_is_refused_as_incompatible(steward, model_copy):
    weights = model_copy / REFERENCE_WEIGHTS
    tensors = load_file(str(weights))
    key = sorted(tensors)[0]
    tensors[key.replace("weight", "wieght") if "weight" in key else key + "_renamed"] = tensors.pop(
        key
    )
    save_file(tensors, str(weights))
    with pytest.raises(ModelFilesRejectedError) as info:
        model_version_register(
            name="xnemo-tiny",
            version="renamed",
            folder=model_copy,
            licence=seeded_licence(SYNTHFACE_LICENCE),
            acting_user=steward,
        )
    assert info.value.code == "model_files_incompatible"
    assert "reference_unet" in info.value.message
    assert f"- {key}" in info.value.message  # the missing key is named


@pytest.mark.parametrize(
    ("recommended", "reason"),
    [
        ({"strength": 1.5}, "strength must be a number in (0, 1], got 1.5"),
        ({"strenght": 0.5}, "unknown setting(s) 'strenght'"),
        ({"resolution": 100}, "resolution must be a multiple of 8 (the autoencoder's tile)"),
        ({"color_match": "sepia"}, "color_match must be one of ('none', 'reference')"),
        ({"num_inference_steps": True}, "num_inference_steps must be a whole number >= 1"),
    ],
)
def test_recommended_settings_the_pipeline_refuses_are_refused_at_registration(
    steward, tmp_path, recommended, reason
):
    """Every job on a model starts from its ``_generation_defaults``: a bad one is the admin's to
    fix before registration, not a failure of each job after its approvals."""
    from reenactment.engine.demo_model import build_tiny_model

    folder = build_tiny_model(tmp_path / "demo")  # complete: index, VAE (8-px tile), scheduler
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    licence = seeded_licence(SYNTHFACE_LICENCE)
    register(folder=folder, licence=licence, acting_user=steward)  # as built: accepted
    index["_generation_defaults"] = {**index["_generation_defaults"], **recommended}
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelFilesRejectedError) as info:
        register(folder=folder, licence=licence, acting_user=steward, version="2")
    assert info.value.code == "model_files_invalid_folder"
    assert "model_index.json recommends settings the pipeline refuses" in info.value.message
    assert reason in info.value.message
    assert ModelVersion.objects.count() == 1


def test_an_official_pth_set_is_registered_and_an_incomplete_one_refused(steward, tmp_path):
    folder = official_model_folder(tmp_path / "official")
    model = register(folder=folder, licence=seeded_licence(XNEMO_LICENCE), acting_user=steward)
    assert model.layout == ModelLayout.OFFICIAL_PTH
    assert sorted(model.weight_files.values_list("relative_path", flat=True)) == [
        "motion_encoder_config.json",
        "unet_additional_kwargs.json",
        "unet_config.json",
        "xnemo_denoising_unet.pth",
        "xnemo_motion_encoder.pth",
        "xnemo_reference_unet.pth",
        "xnemo_temporal_module.pth",
    ]
    (folder / "xnemo_temporal_module.pth").unlink()
    with pytest.raises(ModelFilesRejectedError) as info:
        register(folder=folder, licence=seeded_licence(XNEMO_LICENCE), acting_user=steward)
    assert info.value.code == "model_files_invalid_folder"
    assert "lacks xnemo_temporal_module" in info.value.message


def test_a_withdrawn_lineage_cannot_be_registered(steward, compliance, tiny_model_dir):
    licence = make_licence(acting_user=steward)
    snapshot = make_snapshot(acting_user=steward, officer=compliance, licence=licence)
    license_withdraw(license=licence, reason="ended", acting_user=steward)
    snapshot.refresh_from_db()
    with pytest.raises(ValidationError) as info:
        register(
            folder=tiny_model_dir,
            licence=seeded_licence(SYNTHFACE_LICENCE),
            snapshots=[snapshot],
            acting_user=steward,
        )
    assert "withdrawn" in info.value.message_dict["lineage"][0]


def test_register_model_command_records_licence_and_lineage(
    steward, compliance, tiny_model_dir, tmp_path, capsys
):
    snapshot = make_snapshot(acting_user=steward, officer=compliance)
    checksums = tmp_path / "checksums.json"
    checksums.write_text(json.dumps(folder_checksums(tiny_model_dir)))
    call_command(
        "register_model",
        str(tiny_model_dir),
        "--name",
        "xnemo-synth",
        "--model-version",
        "1.0",
        "--license",
        SYNTHFACE_LICENCE,
        "--lineage",
        f"snapshot:{snapshot.pk}",
        "--checksums",
        str(checksums),
        "--acting-user",
        steward.username,
        "--demonstration",
    )
    parent = ModelVersion.objects.get(name="xnemo-synth")
    assert "Registered xnemo-synth 1.0" in capsys.readouterr().out
    assert list(parent.snapshots.all()) == [snapshot]
    assert parent.is_demonstration and parent.created_by == steward
    call_command(
        "register_model",
        str(tiny_model_dir),
        "--model-version",
        "1.1",
        "--license",
        str(seeded_licence(SYNTHFACE_LICENCE).pk),
        "--lineage",
        "model:xnemo-synth:1.0",
    )
    child = ModelVersion.objects.get(version="1.1")
    assert child.parent == parent and child.name == tiny_model_dir.name


def test_register_model_command_reports_the_reason_of_a_refusal(tiny_model_dir, tmp_path, db):
    checksums = folder_checksums(tiny_model_dir)
    checksums[REFERENCE_WEIGHTS] = "0" * 64
    pinned = tmp_path / "checksums.json"
    pinned.write_text(json.dumps(checksums))
    with pytest.raises(CommandError, match=r"model_files_hash_mismatch.*reference_unet"):
        call_command(
            "register_model",
            str(tiny_model_dir),
            "--model-version",
            "1",
            "--license",
            XNEMO_LICENCE,
            "--checksums",
            str(pinned),
        )
    with pytest.raises(CommandError, match="not_a_folder|neither our layout"):
        call_command(
            "register_model", str(tmp_path), "--model-version", "1", "--license", XNEMO_LICENCE
        )


def test_the_engines_demo_marker_makes_a_demonstration_model(steward, model_copy):
    """``build_tiny_model`` writes ``model_index.json`` with ``_demo_model``; its output is not
    meaningful, and the registry says so unless told otherwise."""
    (model_copy / "model_index.json").write_text(json.dumps({"_demo_model": {"seed": 0}}))
    model = register(
        folder=model_copy, licence=seeded_licence(SYNTHFACE_LICENCE), acting_user=steward
    )
    assert model.is_demonstration
    assert model.architecture["model_index"] == {"_demo_model": {"seed": 0}}
