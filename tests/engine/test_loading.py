"""Checkpoint loading: safety, strictness, coverage, checksums, our layout and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from reenactment.engine.loading import (
    CheckpointIncompatibleError,
    ChecksumMismatchError,
    ModelFolderNotFoundError,
    UnreadableCheckpointError,
    UnsafeCheckpointError,
    XNemoNetworks,
    init_denoising_unet_from_sd,
    load_clip_image_encoder,
    load_denoising_unet,
    load_motion_encoder,
    load_official_checkpoints,
    load_reference_unet,
    load_sd_reference_unet,
    load_svd_vae,
    load_xnemo_model,
    read_state_dict,
    save_xnemo_model,
    sha256_file,
    verify_checksums,
)
from reenactment.engine.networks.motion_encoder import PatchEmbed
from reenactment.engine.networks.positional import interleaved_sincos, sincos_2d

REPO_ROOT = Path(__file__).resolve().parents[2]
RENAMED_FROM = "down_blocks.0.attentions.0.proj_in.weight"
RENAMED_TO = "down_blocks.0.attentions.0.proj_input.weight"
RESHAPED = "conv_in.weight"
DELETED = "up_blocks.3.attentions.0.transformer_blocks.0.ff.net.2.bias"


class _Marker:
    """Unpickling this would create a file; a safe loader must refuse it without doing so."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


def _damaged(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    damaged = dict(state_dict)
    damaged[RENAMED_TO] = damaged.pop(RENAMED_FROM)
    damaged[RESHAPED] = torch.zeros(7, 4, 3, 3)
    del damaged[DELETED]
    return damaged


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "reenactment.engine", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )


def _tiny_cli_options(tiny_dir: Path) -> list[str]:
    return [
        "--unet-config",
        str(tiny_dir / "unet_config.json"),
        "--unet-additional-kwargs",
        str(tiny_dir / "unet_additional_kwargs.json"),
    ]


# --- safe reading ------------------------------------------------------------------------------


def test_pth_round_trip_through_the_safe_loader(
    tmp_path: Path, tiny_state_dicts: dict[str, dict[str, torch.Tensor]], tiny_unet_config: Any
) -> None:
    state_dict = tiny_state_dicts["xnemo_reference_unet"]
    variants = {
        "plain.pth": state_dict,
        "wrapped.pth": {"state_dict": state_dict, "epoch": 3},
        "deepspeed.pth": {"module": {f"module.{k}": v for k, v in state_dict.items()}},
    }
    for name, payload in variants.items():
        torch.save(payload, tmp_path / name)
        _assert_same_state(read_state_dict(tmp_path / name), state_dict)
    model = load_reference_unet(tmp_path / "plain.pth", tiny_unet_config)
    _assert_same_state(model.state_dict(), state_dict)
    assert not model.training


def test_pickle_with_arbitrary_object_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    torch.save({"weight": torch.zeros(2), "payload": _Marker(marker)}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="evil.pth"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


def test_non_tensor_entries_and_garbage_are_unreadable(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(2), "step": 5}, tmp_path / "mixed.pth")
    with pytest.raises(UnreadableCheckpointError, match="'step'"):
        read_state_dict(tmp_path / "mixed.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UnreadableCheckpointError, match="garbage.pth"):
        read_state_dict(tmp_path / "garbage.pth")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(UnreadableCheckpointError, match="garbage.safetensors"):
        read_state_dict(tmp_path / "garbage.safetensors")
    with pytest.raises(UnreadableCheckpointError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")


# --- strict loading ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_strict_loading_names_offending_keys(
    tmp_path: Path,
    tiny_state_dicts: dict[str, dict[str, torch.Tensor]],
    tiny_unet_config: Any,
    suffix: str,
) -> None:
    path = tmp_path / f"xnemo_reference_unet{suffix}"
    damaged = _damaged(tiny_state_dicts["xnemo_reference_unet"])
    if suffix == ".pth":
        torch.save(damaged, path)
    else:
        save_file(damaged, str(path))
    with pytest.raises(CheckpointIncompatibleError) as caught:
        load_reference_unet(path, tiny_unet_config)
    report = caught.value.report
    assert report.missing == tuple(sorted([RENAMED_FROM, DELETED]))
    assert report.unexpected == (RENAMED_TO,)
    assert [key for key, _, _ in report.mismatched] == [RESHAPED]
    message = str(caught.value)
    for key in (RENAMED_FROM, RENAMED_TO, RESHAPED, DELETED):
        assert key in message


def test_motion_encoder_pth_loads_strictly_and_rebuilds_tables(
    tmp_path: Path, motion_encoder_state_dict: dict[str, torch.Tensor]
) -> None:
    torch.save(motion_encoder_state_dict, tmp_path / "xnemo_motion_encoder.pth")
    model = load_motion_encoder(tmp_path / "xnemo_motion_encoder.pth")
    _assert_same_state(model.state_dict(), motion_encoder_state_dict)
    tables = [m for m in model.modules() if isinstance(m, PatchEmbed)]
    assert len(tables) == 3
    for table in tables:
        assert table.pos_embed.device.type == "cpu"
        assert torch.equal(table.pos_embed, sincos_2d(1024, 28))
    damaged = dict(motion_encoder_state_dict)
    del damaged["model.att_2.proj_out.bias"]
    torch.save(damaged, tmp_path / "damaged.pth")
    with pytest.raises(CheckpointIncompatibleError, match="model.att_2.proj_out.bias"):
        load_motion_encoder(tmp_path / "damaged.pth")


def test_denoising_union_coverage(
    tmp_path: Path,
    tiny_dir: Path,
    tiny_state_dicts: dict[str, dict[str, torch.Tensor]],
    tiny_unet_config: Any,
    tiny_unet_kwargs: Any,
) -> None:
    base = tiny_state_dicts["xnemo_denoising_unet"]
    temporal = tiny_state_dicts["xnemo_temporal_module"]
    model, coverage = load_denoising_unet(
        tiny_dir / "xnemo_denoising_unet.safetensors",
        tiny_dir / "xnemo_temporal_module.safetensors",
        tiny_unet_config,
        tiny_unet_kwargs,
    )
    _assert_same_state(model.state_dict(), {**base, **temporal})
    assert (coverage.from_denoising_file, coverage.from_temporal_file) == (778, 364)
    assert coverage.overridden == coverage.regenerated == coverage.outside_split_rule == ()

    # Position tables may be absent: they are regenerated bit for bit.
    without_pe = {k: v for k, v in temporal.items() if not k.endswith(".pos_encoder.pe")}
    torch.save(without_pe, tmp_path / "temporal_no_pe.pth")
    model, coverage = load_denoising_unet(
        tiny_dir / "xnemo_denoising_unet.safetensors",
        tmp_path / "temporal_no_pe.pth",
        tiny_unet_config,
        tiny_unet_kwargs,
    )
    assert len(coverage.regenerated) == 26
    regenerated = {
        k: interleaved_sincos(v.shape[1], v.shape[2])
        for k, v in temporal.items()
        if k.endswith(".pos_encoder.pe")
    }
    _assert_same_state(model.state_dict(), {**base, **without_pe, **regenerated})

    # ... and the formula is the official one: it reproduces the stored tables bit for bit. MKL
    # picks its sin/cos code per CPU (AVX-512 machines differ in the last bit of ~8 % of the
    # 64-wide tables); the fixture was computed on its AVX path, so the comparison pins that
    # path, in a process of its own (MKL reads MKL_CBWR once).
    script = (
        "import sys, torch; from safetensors.torch import load_file; "
        "from reenactment.engine.networks.positional import interleaved_sincos; "
        "t = load_file(sys.argv[1]); "
        "bad = [k for k, v in t.items() if k.endswith('.pos_encoder.pe') "
        "and not torch.equal(interleaved_sincos(v.shape[1], v.shape[2]), v)]; "
        "print(len([k for k in t if k.endswith('.pos_encoder.pe')]), len(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny_dir / "xnemo_temporal_module.safetensors")],
        env={**os.environ, "MKL_CBWR": "AVX"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["26", "0"], result.stdout + result.stderr

    # A learned temporal tensor covered by neither file is an error naming it.
    missing_key = next(k for k in temporal if k.endswith("proj_out.weight"))
    torch.save({k: v for k, v in temporal.items() if k != missing_key}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointIncompatibleError, match=missing_key.replace(".", r"\.")):
        load_denoising_unet(
            tiny_dir / "xnemo_denoising_unet.safetensors",
            tmp_path / "bad.pth",
            tiny_unet_config,
            tiny_unet_kwargs,
        )

    # A denoising file that also holds temporal keys: the temporal file wins (official order).
    stale = {k: torch.zeros_like(v) for k, v in temporal.items()}
    torch.save({**base, **stale}, tmp_path / "denoising_with_temporal.pth")
    model, coverage = load_denoising_unet(
        tmp_path / "denoising_with_temporal.pth",
        tiny_dir / "xnemo_temporal_module.safetensors",
        tiny_unet_config,
        tiny_unet_kwargs,
    )
    assert len(coverage.overridden) == len(temporal)
    _assert_same_state(model.state_dict(), {**base, **temporal})


# --- checksums ---------------------------------------------------------------------------------


def test_sha256_manifest(tmp_path: Path, tiny_dir: Path, tiny_unet_config: Any) -> None:
    files = [tiny_dir / "xnemo_reference_unet.safetensors", tiny_dir / "unet_config.json"]
    # The fixture's own manifest pins these files ({"files": {name: {"sha256": ...}}}).
    verify_checksums(files, tiny_dir / "fixture_manifest.json")
    flat = {path.name: sha256_file(path) for path in files}
    verify_checksums(files, flat)
    load_reference_unet(files[0], tiny_unet_config, manifest=flat)

    wrong = {**flat, "xnemo_reference_unet.safetensors": "0" * 64}
    (tmp_path / "manifest.json").write_text(json.dumps(wrong))
    with pytest.raises(ChecksumMismatchError, match="xnemo_reference_unet.safetensors"):
        verify_checksums(files, tmp_path / "manifest.json")
    with pytest.raises(ChecksumMismatchError, match="xnemo_reference_unet.safetensors"):
        load_reference_unet(files[0], tiny_unet_config, manifest=wrong)
    with pytest.raises(ChecksumMismatchError, match="not pinned"):
        verify_checksums([tiny_dir / "inputs.safetensors"], flat)


# --- our layout and local base models ----------------------------------------------------------


def test_save_pretrained_round_trip(
    tmp_path: Path,
    tiny_unets: tuple[Any, Any],
    motion_encoder: Any,
    motion_encoder_state_dict: dict[str, torch.Tensor],
) -> None:
    reference, denoising = tiny_unets
    save_xnemo_model(tmp_path / "model", XNemoNetworks(reference, denoising, motion_encoder))
    for name in ("reference_unet", "denoising_unet", "motion_encoder"):
        assert (tmp_path / "model" / name / "diffusion_pytorch_model.safetensors").is_file()
        assert (tmp_path / "model" / name / "config.json").is_file()
    loaded = load_xnemo_model(tmp_path / "model")
    _assert_same_state(loaded.reference_unet.state_dict(), reference.state_dict())
    _assert_same_state(loaded.denoising_unet.state_dict(), denoising.state_dict())
    _assert_same_state(loaded.motion_encoder.state_dict(), motion_encoder_state_dict)
    assert loaded.denoising_unet.config.block_out_channels == denoising.config.block_out_channels
    for table in (m for m in loaded.motion_encoder.modules() if isinstance(m, PatchEmbed)):
        assert torch.equal(table.pos_embed, sincos_2d(1024, 28))
    with pytest.raises(ModelFolderNotFoundError, match="reference_unet"):
        load_xnemo_model(tmp_path / "missing")


def test_sd_unet_initialises_both_unets(
    tmp_path: Path, tiny_unet_config: Any, tiny_unet_kwargs: Any
) -> None:
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in tiny_unet_config.items() if not k.startswith("_")}
    sd_unet = UNet2DConditionModel(**config)
    sd_unet.save_pretrained(tmp_path / "sd-image-variations" / "unet")
    sd_state = sd_unet.state_dict()

    reference = load_sd_reference_unet(tmp_path / "sd-image-variations")
    assert sd_state.keys() - reference.state_dict().keys() == {
        "conv_norm_out.weight",
        "conv_norm_out.bias",
        "conv_out.weight",
        "conv_out.bias",
    }
    for key, value in reference.state_dict().items():
        assert torch.equal(value, sd_state[key]), key

    denoising = init_denoising_unet_from_sd(tmp_path / "sd-image-variations", tiny_unet_kwargs)
    den_state = denoising.state_dict()
    assert sd_state.keys() <= den_state.keys()
    for key, value in sd_state.items():
        assert torch.equal(den_state[key], value), key
    # Fresh motion/temporal modules start as identities (zero output projection).
    suffix = "temporal_transformer.proj_out.weight"
    out_proj = [v for k, v in den_state.items() if k.endswith(suffix)]
    assert out_proj and all(not v.any() for v in out_proj)


def test_base_models_come_from_local_folders_only(tmp_path: Path) -> None:
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with pytest.raises(ModelFolderNotFoundError, match="never downloaded"):
        load_clip_image_encoder(tmp_path / "nowhere")
    with pytest.raises(ModelFolderNotFoundError, match="never downloaded"):
        load_svd_vae(tmp_path / "nowhere")
    with pytest.raises(ModelFolderNotFoundError, match="never downloaded"):
        load_sd_reference_unet(tmp_path / "nowhere")

    clip_config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        projection_dim=8,
    )
    CLIPVisionModelWithProjection(clip_config).save_pretrained(tmp_path / "base" / "image_encoder")
    clip = load_clip_image_encoder(tmp_path / "base", dtype=torch.float16)
    assert isinstance(clip, CLIPVisionModelWithProjection) and clip.dtype == torch.float16

    AutoencoderKLTemporalDecoder(
        block_out_channels=(32,), layers_per_block=1, down_block_types=("DownEncoderBlock2D",)
    ).save_pretrained(tmp_path / "svd" / "vae")
    vae = load_svd_vae(tmp_path / "svd")
    assert isinstance(vae, AutoencoderKLTemporalDecoder) and not vae.training


# --- command line ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_folder(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_state_dicts: dict[str, dict[str, torch.Tensor]],
    motion_encoder_state_dict: dict[str, torch.Tensor],
) -> Path:
    """The four files under their official names, as plain ``.pth`` state dicts."""
    folder = tmp_path_factory.mktemp("official")
    for name, state_dict in tiny_state_dicts.items():
        torch.save(state_dict, folder / f"{name}.pth")
    torch.save(motion_encoder_state_dict, folder / "xnemo_motion_encoder.pth")
    return folder


def test_load_official_checkpoints_from_a_folder(
    official_folder: Path,
    tiny_unets: tuple[Any, Any],
    motion_encoder_state_dict: dict[str, torch.Tensor],
    tiny_unet_config: Any,
    tiny_unet_kwargs: Any,
) -> None:
    manifest = {path.name: sha256_file(path) for path in official_folder.iterdir()}
    networks, coverage = load_official_checkpoints(
        official_folder, tiny_unet_config, tiny_unet_kwargs, manifest=manifest
    )
    reference, denoising = tiny_unets
    _assert_same_state(networks.reference_unet.state_dict(), reference.state_dict())
    _assert_same_state(networks.denoising_unet.state_dict(), denoising.state_dict())
    _assert_same_state(networks.motion_encoder.state_dict(), motion_encoder_state_dict)
    assert coverage.from_denoising_file == 778 and coverage.from_temporal_file == 364
    assert not networks.motion_encoder.training


def test_cli_reports_fixture_files_compatible(official_folder: Path, tiny_dir: Path) -> None:
    result = _cli(
        "inspect-checkpoint",
        str(tiny_dir / "xnemo_reference_unet.safetensors"),
        str(tiny_dir / "xnemo_denoising_unet.safetensors"),
        str(tiny_dir / "xnemo_temporal_module.safetensors"),
        str(official_folder),
        *_tiny_cli_options(tiny_dir),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for kind in (
        "xnemo_reference_unet.pth",
        "xnemo_denoising_unet.pth",
        "xnemo_temporal_module.pth",
        "xnemo_motion_encoder.pth",
    ):
        assert f"looks like:  {kind}" in result.stdout
    assert result.stdout.count("compatible:  yes") == 7
    assert "436 (1,644,352 elements)" in result.stdout


def test_cli_names_offending_keys(
    tmp_path: Path, tiny_dir: Path, tiny_state_dicts: dict[str, dict[str, torch.Tensor]]
) -> None:
    torch.save(_damaged(tiny_state_dicts["xnemo_reference_unet"]), tmp_path / "damaged.pth")
    result = _cli("inspect-checkpoint", str(tmp_path / "damaged.pth"), *_tiny_cli_options(tiny_dir))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "compatible:  NO" in result.stdout
    for key in (RENAMED_FROM, RENAMED_TO, RESHAPED, DELETED):
        assert key in result.stdout
    # Without the tiny config the (correct) fixture file does not fit the full-size networks.
    full = _cli("inspect-checkpoint", str(tiny_dir / "xnemo_reference_unet.safetensors"))
    assert full.returncode == 1 and "expected [320, 4, 3, 3]" in full.stdout


def test_cli_unreadable_input(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    torch.save({"payload": _Marker(marker)}, tmp_path / "evil.pth")
    (tmp_path / "garbage.safetensors").write_bytes(b"garbage")
    result = _cli(
        "inspect-checkpoint",
        str(tmp_path / "evil.pth"),
        str(tmp_path / "garbage.safetensors"),
        str(tmp_path / "absent.pth"),
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "evil.pth: refused" in result.stderr
    assert "garbage.safetensors" in result.stderr and "absent.pth" in result.stderr
    assert not marker.exists()
