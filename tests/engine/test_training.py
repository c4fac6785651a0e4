"""End-to-end trainer: manifests, augmentations, stages, resumption, exports (tiny, CPU).

Every test builds real networks at toy sizes (32x32 frames, 8x8 latents) and trains on a small
SynthFace snapshot written to a temporary folder, through the same manifest reader the platform
uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from reenactment.engine.synthface import generate_dataset
from reenactment.engine.training import (
    ClipIntegrityError,
    InitialWeightsError,
    SnapshotStatusUnknownError,
    SnapshotWithdrawnError,
    Trainer,
    TrainingConfig,
    convert_synthface_manifest,
    load_model_folder,
    read_manifest,
)
from reenactment.engine.training.augmentations import (
    DrivingAugmentation,
    colour_jitter,
    default_face_boxes,
    face_centred_crop,
    piecewise_affine_warp,
    random_scale,
)
from reenactment.engine.training.components import small_unet_config
from reenactment.engine.training.datasets import ClipDataset, SampleConfig
from reenactment.engine.training.manifest import write_status_file
from reenactment.engine.training.trainer import step_seed

REPO_ROOT = Path(__file__).resolve().parents[2]
PREVIEW_MODEL = REPO_ROOT / "reenactment" / "engine" / "preview_model"

TINY_MODEL: dict[str, Any] = {
    "unet": small_unet_config(block_out_channels=(32, 32, 32, 32), sample_size=8),
    "motion_encoder": {
        "type": "compact",
        "input_size": 32,
        "channels": [16, 32],
        "head_channels": 8,
        "attention_heads": 4,
    },
    "vae": {"type": "tiny", "block_out_channels": [32, 32, 32]},
    "image_encoder": {
        "type": "tiny",
        "image_size": 32,
        "patch_size": 16,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    },
    "resolution": 32,
    "motion_input_size": 32,
}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """One intra-op thread: these networks are tiny, and on a busy two-core machine a second
    thread only adds contention (a step is ~10x slower with two threads under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-identity SynthFace snapshot (npz clips of 6 frames, 32x32) with an active status."""
    root = tmp_path_factory.mktemp("synthface")
    generate_dataset(
        root / "data", num_identities=4, clips_per_identity=1, frames=6, size=32, format="npz"
    )
    return convert_synthface_manifest(
        root / "data",
        root / "snap" / "manifest.jsonl",
        snapshot_id="snap-test",
        exported_at="2025-01-01T00:00:00Z",
    )


def make_config(tmp_path: Path, **overrides: Any) -> TrainingConfig:
    data: dict[str, Any] = {
        "stage": 1,
        "model": TINY_MODEL,
        "output_dir": str(tmp_path / "run"),
        "max_steps": 2,
        "batch_size": 2,
        "frames": 2,
        "learning_rate": 1e-3,
        "warmup_steps": 1,
        "uncond_probability": 0.0,
        "gan": {"adversarial_start": 0},
        "seed": 3,
    }
    data.update(overrides)
    return TrainingConfig.from_dict(data)


def all_parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {
        f"{net}.{name}": p.detach().clone()
        for net, module in trainer._networks().items()
        for name, p in module.named_parameters()
    }


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def resumed_after_two_steps(folder: Path, snapshot: Path, options: dict[str, Any]) -> Trainer:
    """A run trained two steps and checkpointed, then a fresh trainer resumed from that."""
    first = Trainer(make_config(folder, **options), snapshot, show_progress=False)
    first.train_step()
    first.train_step()
    first.save_checkpoint()
    del first
    resumed = Trainer(make_config(folder, **options), snapshot, show_progress=False)
    assert resumed.load_checkpoint() == 2
    return resumed


# --------------------------------------------------------------------------- manifests


def test_manifest_lists_clips_with_persons_and_licences(snapshot: Path) -> None:
    manifest = read_manifest(snapshot)
    assert manifest.snapshot_id == "snap-test"
    assert manifest.exported_at == "2025-01-01T00:00:00Z"
    assert len(manifest) == 4
    assert manifest.persons == tuple(f"synthface:id{i:05d}" for i in range(4))
    assert manifest.licence_ids == ("synthface-cc0-1.0",)
    assert all(clip.path.is_file() and clip.frames == 6 for clip in manifest.clips)


def test_withdrawn_snapshot_is_refused(snapshot: Path, tmp_path: Path) -> None:
    copy = tmp_path / "manifest.jsonl"
    copy.write_text(
        snapshot.read_text().replace('"path": "../data', f'"path": "{snapshot.parent}/../data')
    )
    with pytest.raises(SnapshotStatusUnknownError):
        read_manifest(copy)  # no status.json here: the status cannot be confirmed
    write_status_file(tmp_path, {"snap-test": "withdrawn"})
    with pytest.raises(SnapshotWithdrawnError, match="withdrawn"):
        read_manifest(copy)
    with pytest.raises(SnapshotWithdrawnError):
        Trainer(make_config(tmp_path), copy)
    # A platform-provided checker overrides the file.
    assert len(read_manifest(copy, status_checker=lambda _id: "active")) == 4


def test_tampered_clip_is_refused(snapshot: Path, tmp_path: Path) -> None:
    manifest = read_manifest(snapshot)
    victim = manifest.clips[1].path
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        dataset = ClipDataset(manifest, SampleConfig(size=32, frames=2, augment=False))
        dataset[(0, 0)]  # an intact clip is fine
        with pytest.raises(ClipIntegrityError, match="SHA-256 mismatch"):
            dataset[(1, 0)]
    finally:
        victim.write_bytes(original)


def test_malformed_manifest_names_the_line(snapshot: Path, tmp_path: Path) -> None:
    lines = snapshot.read_text().splitlines()
    broken = json.loads(lines[2])
    broken["licence_ids"] = []
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], lines[1], json.dumps(broken)]) + "\n")
    write_status_file(tmp_path, {"snap-test": "active"})
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: a clip without licence ids"):
        read_manifest(bad)


@pytest.fixture(scope="module")
def paired_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 identities x 1 clip plus 2 cross-reenactment clips, converted with their driving clips."""
    root = tmp_path_factory.mktemp("synthface_pairs")
    generate_dataset(
        root / "data",
        num_identities=3,
        clips_per_identity=1,
        frames=6,
        size=32,
        format="npz",
        cross_pairs=2,
        seed=5,
    )
    return convert_synthface_manifest(
        root / "data",
        root / "snap" / "manifest.jsonl",
        snapshot_id="snap-pairs",
        kinds=("clip", "cross"),
    )


def test_cross_identity_pairs_drive_a_with_the_frames_of_b(paired_snapshot: Path) -> None:
    import numpy as np

    manifest = read_manifest(paired_snapshot)
    by_id = {clip.clip_id: i for i, clip in enumerate(manifest.clips)}
    crosses = [i for i, clip in enumerate(manifest.clips) if "driving_clip_id" in clip.extra]
    assert len(manifest) == 5 and len(crosses) == 2
    paired = ClipDataset(
        manifest, SampleConfig(size=32, frames=3, augment=False, cross_identity_probability=1.0)
    )
    plain = ClipDataset(manifest, SampleConfig(size=32, frames=3, augment=False))
    assert plain.driving_pairs == {}
    for index in crosses:
        clip = manifest.clips[index]
        driver = manifest.clips[by_id[clip.extra["driving_clip_id"]]]
        assert paired.driving_pairs[index] == by_id[driver.clip_id]
        # The pair is real ground truth: A performs exactly B's motion, as someone else.
        with np.load(clip.path) as a, np.load(driver.path) as b:
            assert np.array_equal(a["motion"], b["motion"])
            assert not np.array_equal(a["identity"], b["identity"])
            assert clip.persons != driver.persons
        sample, own = paired[(index, 7)], plain[(index, 7)]
        window = sample["frame_indices"].numpy()
        assert sample["driving_clip_index"].item() == by_id[driver.clip_id]
        assert torch.equal(sample["target"], own["target"])
        assert torch.equal(own["driving"], own["target"])
        expected = torch.from_numpy(paired.frames(by_id[driver.clip_id])[window])
        # f h w c -> c f h w
        expected = expected.permute(3, 0, 1, 2).float() / 127.5 - 1.0
        assert torch.allclose(sample["driving"], expected)
        assert (sample["driving"] - sample["target"]).abs().mean() > 0.01
    # Clips without a pair are sampled exactly as before.
    single = next(i for i in range(len(manifest)) if i not in crosses)
    a, b = paired[(single, 3)], plain[(single, 3)]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["driving_clip_index"].item() == single


def test_cross_identity_pairs_need_their_driving_clips(
    snapshot: Path, paired_snapshot: Path, tmp_path: Path
) -> None:
    lines = paired_snapshot.read_text().splitlines()
    kept = [line for line in lines[1:] if "driving_clip_id" in line]
    only_crosses = tmp_path / "crosses.jsonl"
    base = paired_snapshot.parent
    only_crosses.write_text(
        "\n".join([lines[0], *kept]).replace('"path": "../', f'"path": "{base}/../') + "\n"
    )
    write_status_file(tmp_path, {"snap-pairs": "active"})
    manifest = read_manifest(only_crosses)
    ClipDataset(manifest, SampleConfig(size=32))  # without the option nothing is paired
    with pytest.raises(ValueError, match="which the manifest does not list"):
        ClipDataset(manifest, SampleConfig(size=32, cross_identity_probability=0.5))
    with pytest.raises(ValueError, match="--with-cross-pairs"):
        ClipDataset(read_manifest(snapshot), SampleConfig(size=32, cross_identity_probability=0.5))
    with pytest.raises(ValueError, match="cross_identity_probability"):
        make_config(tmp_path, cross_identity_probability=1.5)


def test_reference_can_come_from_another_clip_of_the_same_person(
    snapshot: Path, paired_snapshot: Path
) -> None:
    manifest = read_manifest(paired_snapshot)
    config = SampleConfig(size=32, frames=2, augment=False, reference_other_clip_probability=1.0)
    dataset = ClipDataset(manifest, config)
    plain = ClipDataset(manifest, SampleConfig(size=32, frames=2, augment=False))
    moved = 0
    for index, clip in enumerate(manifest.clips):
        for seed in range(3):
            sample = dataset[(index, seed)]
            source = sample["reference_clip_index"].item()
            if index not in dataset.same_person_clips:
                assert source == index  # nobody else shows this person
                continue
            moved += 1
            assert source != index and source in dataset.same_person_clips[index]
            assert manifest.clips[source].persons == clip.persons
            frame = dataset.frames(source)[sample["reference_index"].item()]
            expected = torch.from_numpy(frame).permute(2, 0, 1).float() / 127.5 - 1.0
            assert torch.allclose(sample["reference"], expected)
            # The targets are still the clip's own frames.
            assert torch.equal(sample["target"], plain[(index, seed)]["target"])
    assert moved > 0
    with pytest.raises(ValueError, match="persons with more than one clip"):
        ClipDataset(read_manifest(snapshot), config)


def test_convert_cli_lists_cross_pairs_only_when_asked(
    paired_snapshot: Path, tmp_path: Path
) -> None:
    from reenactment.engine.training.__main__ import main

    data = paired_snapshot.parent.parent / "data"
    for flags, expected in (([], 3), (["--with-cross-pairs"], 5)):
        out = tmp_path / f"snap{len(flags)}" / "manifest.jsonl"
        assert main(["convert-synthface", str(data), str(out), "--snapshot-id", "s", *flags]) == 0
        clips = read_manifest(out).clips
        assert len(clips) == expected
        assert sum("driving_clip_id" in clip.extra for clip in clips) == expected - 3


# --------------------------------------------------------------------------- augmentations


def test_augmentations_keep_shapes_and_are_seeded() -> None:
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    boxes = default_face_boxes(3, 32, 32)
    functions = {
        "colour": lambda g: colour_jitter(images, g),
        "scale": lambda g: random_scale(images, g),
        "warp": lambda g: piecewise_affine_warp(images, g),
        "crop": lambda g: face_centred_crop(images, boxes, g),
        "all": lambda g: DrivingAugmentation()(images, g),
    }
    for name, fn in functions.items():
        a = fn(torch.Generator().manual_seed(1))
        b = fn(torch.Generator().manual_seed(1))
        c = fn(torch.Generator().manual_seed(2))
        assert a.shape == images.shape, name
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name
        assert a.min() >= -1.0 - 1e-5 and a.max() <= 1.0 + 1e-5, name


def test_zero_warp_is_the_identity() -> None:
    images = torch.rand(2, 3, 24, 24)
    out = piecewise_affine_warp(images, torch.Generator().manual_seed(0), magnitude=0.0)
    assert torch.allclose(out, images, atol=1e-5)


# --------------------------------------------------------------------------- stages


def test_stage1_step_trains_exactly_the_stage1_parameters(snapshot: Path, tmp_path: Path) -> None:
    trainer = Trainer(make_config(tmp_path), snapshot, show_progress=False)
    before = all_parameters(trainer)
    logs = trainer.train_step()
    after = all_parameters(trainer)
    moved = changed(before, after)
    assert {"diff", "rec", "perc", "adv", "fm", "d_loss"} <= logs.keys()
    temporal = {k for k in before if ".temporal_modules." in k}
    assert temporal and not (moved & temporal)
    assert not any(k.startswith(("vae.", "image_encoder.")) for k in moved)
    trainable = {f"{name}" for name, _ in trainer.trainable} | {
        k for k in before if k.startswith("discriminator.")
    }
    assert moved <= trainable
    for prefix in (
        "reference_unet.",
        "denoising_unet.conv_in.",
        "motion_encoder.",
        "gan_decoder.",
        "discriminator.",
    ):
        assert any(k.startswith(prefix) for k in moved), prefix
    assert any(".motion_modules." in k for k in moved)


def test_stage2_step_trains_only_temporal_modules(snapshot: Path, tmp_path: Path) -> None:
    trainer = Trainer(make_config(tmp_path, stage=2, frames=4), snapshot, show_progress=False)
    before = all_parameters(trainer)
    trainer.train_step()
    moved = changed(before, all_parameters(trainer))
    assert moved
    assert all(".temporal_modules." in k and k.startswith("denoising_unet.") for k in moved)


def test_reference_starts_noise_the_portrait_and_train_towards_the_target(
    snapshot: Path, tmp_path: Path
) -> None:
    options = {"reference_start_probability": 1.0, "reference_start_timesteps": [600, 601]}
    trainer = Trainer(make_config(tmp_path / "a", **options), snapshot, show_progress=False)
    batch = trainer._batch(0)
    plain = trainer._diffusion_inputs(batch, torch.Generator().manual_seed(5))
    started = trainer._diffusion_inputs(
        batch, torch.Generator().manual_seed(5), reference_start=True
    )
    assert not plain["from_reference"].any() and started["from_reference"].all()
    assert started["timesteps"].tolist() == [600, 600]
    # The input is the portrait's latent (every frame) under the same noise a plain step draws.
    scheduler = trainer.components.noise_scheduler
    portrait = started["ref_latent"].unsqueeze(2).expand_as(started["noisy"])
    expected = scheduler.add_noise(portrait, plain["epsilon"], started["timesteps"])
    assert torch.allclose(started["noisy"], expected, atol=1e-6)
    # The epsilon to learn is the one whose x0 estimate from that input is the target's latent.
    from reenactment.engine.training.components import vae_encode

    target = batch["target"]
    flat = vae_encode(trainer.components.vae, target.transpose(1, 2).flatten(0, 1))
    latents = flat.reshape(2, target.shape[2], *flat.shape[1:]).transpose(1, 2)
    abar = scheduler.alphas_cumprod[600]
    x0 = (started["noisy"] - (1 - abar).sqrt() * started["epsilon"]) / abar.sqrt()
    assert torch.allclose(x0, latents, atol=1e-4)
    assert not torch.allclose(x0, portrait, atol=1e-2)

    # A step trains on it and says how many samples started from the portrait.
    logs = trainer.train_step()
    assert logs["ref_start"] == 1.0 and torch.isfinite(torch.tensor(logs["diff"]))
    # Unconditional steps (no driver to take the pose from) and stage 2 never start from it.
    always_uncond = make_config(tmp_path / "u", uncond_probability=1.0, **options)
    uncond = Trainer(always_uncond, snapshot, show_progress=False)
    assert uncond.train_step()["ref_start"] == 0.0
    stage2 = Trainer(make_config(tmp_path / "b", stage=2, **options), snapshot, show_progress=False)
    assert "ref_start" not in stage2.train_step()

    # Off (the default), a conditional step draws exactly what it drew before the option.
    off = Trainer(make_config(tmp_path / "c"), snapshot, show_progress=False)
    again = off._diffusion_inputs(batch, torch.Generator().manual_seed(5), reference_start=True)
    assert torch.equal(again["noisy"], plain["noisy"])
    assert torch.equal(again["epsilon"], plain["epsilon"])


def test_train_timesteps_restrict_the_noise_levels_and_renormalise_the_loss(
    snapshot: Path, tmp_path: Path
) -> None:
    options = {"train_timesteps": [450, 451], "x0_weight_cap": 50.0}
    trainer = Trainer(make_config(tmp_path / "a", **options), snapshot, show_progress=False)
    batch = trainer._batch(0)
    inputs = trainer._diffusion_inputs(batch, torch.Generator().manual_seed(3))
    assert inputs["timesteps"].tolist() == [450, 450]
    # Over one trained timestep the weights average to that timestep's own weight, so the
    # capped loss is the plain mean squared error; over the whole schedule it would not be.
    pred = torch.randn(inputs["epsilon"].shape, generator=torch.Generator().manual_seed(4))
    plain_mse = torch.nn.functional.mse_loss(pred, inputs["epsilon"])
    loss = trainer._diffusion_loss(pred, inputs["epsilon"], inputs["timesteps"])
    assert torch.allclose(loss, plain_mse, rtol=1e-5)
    whole = Trainer(make_config(tmp_path / "b", x0_weight_cap=50.0), snapshot, show_progress=False)
    assert whole._diffusion_loss(pred, inputs["epsilon"], inputs["timesteps"]) < plain_mse / 2
    # A step draws its timesteps from the window too (and trains).
    logs = trainer.train_step()
    assert torch.isfinite(torch.tensor(logs["diff"]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"reference_start_probability": 1.5}, "reference_start_probability must be in"),
        ({"reference_start_timesteps": [800, 800]}, r"must be \[low, high\).*got \[800, 800\]"),
        ({"reference_start_timesteps": [0, 500, 1000]}, "reference_start_timesteps must be"),
        ({"reference_start_timesteps": [-1, 10]}, "reference_start_timesteps must be"),
        ({"train_timesteps": [500, 1001]}, r"train_timesteps must be \[low, high\)"),
        ({"train_timesteps": [300, 200]}, "train_timesteps must be"),
    ],
)
def test_reference_start_options_are_checked(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **options)


def test_resume_continues_bit_identically(snapshot: Path, tmp_path: Path) -> None:
    options = {"ema_decay": 0.9, "uncond_probability": 0.5, "max_steps": 4, "x0_weight_cap": 50.0}
    straight = Trainer(make_config(tmp_path / "a", **options), snapshot, show_progress=False)
    for _ in range(4):
        straight.train_step()

    resumed = resumed_after_two_steps(tmp_path / "b", snapshot, options)
    resumed.train_step()
    resumed.train_step()

    assert resumed.step == straight.step == 4
    a, b = all_parameters(straight), all_parameters(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight.ema is not None and resumed.ema is not None
    assert all(torch.equal(straight.ema[k], resumed.ema[k]) for k in straight.ema)


def test_time_budget_stops_saves_exports_and_resumes(
    snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``max_minutes``: a run whose budget is spent after its first step stops there (not at
    ``max_steps``), checkpoints, exports and records the steps it ran; ``--resume`` goes on,
    and the command line's ``--max-minutes`` overrides the file's."""
    from reenactment.engine.training.__main__ import main

    options = {"max_steps": 50, "max_minutes": 1e-9}
    first = Trainer(make_config(tmp_path, **options), snapshot, show_progress=False)
    folder = first.train()
    assert folder is not None and first.step == 1
    record = json.loads((folder / "training.json").read_text())
    assert record["steps"] == 1 and record["training_config"]["max_minutes"] == 1e-9
    assert record["stages"][-1]["steps"] == 1 and record["stages"][-1]["device"] == "cpu"

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(make_config(tmp_path, max_steps=50).to_dict()))
    command = ["--config", str(config_path), "--manifest", str(snapshot), "--resume"]
    assert main([*command, "--max-minutes", "1e-9"]) == 0
    record = json.loads((folder / "training.json").read_text())
    assert record["steps"] == 2 and record["stages"][-1]["steps"] == 2
    # The step that ran out of time is logged (log_every is 10), so its time is counted.
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2]
    assert main([*command, "--max-minutes", "-1"]) == 2
    assert "max_minutes must be >= 0" in capsys.readouterr().err


def test_gradient_checkpointing_and_bf16_autocast(snapshot: Path, tmp_path: Path) -> None:
    plain = Trainer(make_config(tmp_path / "a"), snapshot, show_progress=False)
    checkpointed = Trainer(
        make_config(tmp_path / "b", gradient_checkpointing=True), snapshot, show_progress=False
    )
    assert checkpointed.components.denoising_unet.is_gradient_checkpointing
    plain.train_step()
    checkpointed.train_step()
    a, b = all_parameters(plain), all_parameters(checkpointed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    bf16 = Trainer(
        make_config(tmp_path / "c", mixed_precision="bf16"), snapshot, show_progress=False
    )
    logs = bf16.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert all(p.dtype == torch.float32 for _, p in bf16.trainable)  # master weights stay fp32


def test_stage0_trains_and_calibrates_the_vae(snapshot: Path, tmp_path: Path) -> None:
    trainer = Trainer(make_config(tmp_path, stage=0, frames=2), snapshot, show_progress=False)
    before = all_parameters(trainer)
    trainer.train_step()
    moved = changed(before, all_parameters(trainer))
    assert moved and all(k.startswith("vae.") for k in moved)
    vae = trainer.components.vae.eval()
    images = trainer._batch(0)["target"].transpose(1, 2).flatten(0, 1)
    with torch.no_grad():
        recon_before = vae.decode(vae.encode(images).latent_dist.mean, num_frames=2).sample
        trainer.calibrate_vae(batches=2)
        latents = vae.encode(images).latent_dist.mean
        recon_after = vae.decode(latents, num_frames=2).sample
    assert torch.allclose(recon_before, recon_after, atol=1e-4)


def test_stage0_adversarial_decoder_fine_tune(snapshot: Path, tmp_path: Path) -> None:
    """A patch discriminator joins from ``vae_adversarial_start``: the decoder and the
    discriminator train, the encoder (the latent space) does not, a resumed run is
    bit-identical, and the export holds no discriminator."""
    options: dict[str, Any] = {
        "stage": 0,
        "vae_train_encoder": False,
        "vae_adversarial_weight": 0.5,
        "vae_adversarial_start": 1,
        "max_steps": 3,
    }
    straight = Trainer(make_config(tmp_path / "a", **options), snapshot, show_progress=False)
    assert straight.vae_discriminator is not None
    before = all_parameters(straight)
    logs = straight.train_step()
    assert "adv" not in logs and "d_loss" not in logs
    moved = changed(before, all_parameters(straight))
    assert moved and all(k.startswith("vae.decoder.") for k in moved)

    before = all_parameters(straight)
    logs = straight.train_step()
    assert logs["adv_weight"] > 0 and torch.isfinite(torch.tensor(logs["d_loss"]))
    moved = changed(before, all_parameters(straight))
    assert {k.split(".")[0] for k in moved} == {"vae", "vae_discriminator"}
    assert not any(k.startswith("vae.encoder.") for k in moved)
    straight.train_step()

    resumed = resumed_after_two_steps(tmp_path / "b", snapshot, options)
    resumed.train_step()
    a, b = all_parameters(straight), all_parameters(resumed)
    assert any(k.startswith("vae_discriminator.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)

    folder = resumed.export()
    assert folder is not None
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["vae"]

    # Off by default, and a negative weight is refused before anything is built.
    assert (
        Trainer(
            make_config(tmp_path / "c", stage=0), snapshot, show_progress=False
        ).vae_discriminator
        is None
    )
    with pytest.raises(ValueError, match="vae_adversarial_weight"):
        make_config(tmp_path, stage=0, vae_adversarial_weight=-1.0)
    with pytest.raises(ValueError, match="stages 0 and 3 only"):
        make_config(tmp_path, stage=1, vae_adversarial_weight=0.1)


def test_tiny_vae_decodes_each_frame_independently_of_the_chunk() -> None:
    from reenactment.engine.training.components import ModelConfig, build_vae

    vae = build_vae(ModelConfig.from_dict(TINY_MODEL).vae).eval()
    latents = torch.randn(4, 4, 8, 8)
    with torch.no_grad():
        chunk = vae.decode(latents, num_frames=4).sample
        single = vae.decode(latents, num_frames=1).sample
    assert torch.allclose(chunk, single, atol=1e-6)


# --------------------------------------------------------------------------- exports


def test_cli_trains_exports_and_the_model_folder_animates(snapshot: Path, tmp_path: Path) -> None:
    from reenactment.engine.loading import load_denoising_unet, load_reference_unet
    from reenactment.engine.training.__main__ import main
    from reenactment.engine.training.components import CompactMotionEncoder
    from reenactment.engine.training.sampling import reenact

    config = make_config(tmp_path, max_steps=1, export_formats=["safetensors", "pth"])
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))
    assert main(["--config", str(config_path), "--manifest", str(snapshot)]) == 0
    run = Path(config.output_dir)
    assert [json.loads(line)["step"] for line in (run / "train_log.jsonl").open()] == [1]

    official = run / "official"
    unet_config = TINY_MODEL["unet"]
    for suffix in (".safetensors", ".pth"):
        load_reference_unet(official / f"xnemo_reference_unet{suffix}", unet_config)
        _, coverage = load_denoising_unet(
            official / f"xnemo_denoising_unet{suffix}",
            official / f"xnemo_temporal_module{suffix}",
            unet_config,
        )
        assert coverage.from_temporal_file > 0 and not coverage.regenerated
    from safetensors.torch import load_file

    encoder = CompactMotionEncoder.from_pretrained(run / "model" / "motion_encoder")
    encoder.load_state_dict(load_file(str(official / "xnemo_motion_encoder.safetensors")))

    components = load_model_folder(run)
    index = json.loads((run / "model" / "model_index.json").read_text())
    assert index["motion_encoder"] == [
        "reenactment.engine.networks.compact_motion_encoder",
        "CompactMotionEncoder",
    ]
    assert index["_generation_defaults"] == {"resolution": components.config.resolution}
    info = json.loads((run / "model" / "training.json").read_text())
    assert [(r["name"], r["stage"], r["steps"]) for r in info["stages"]] == [("run", 1, 1)]
    reference = torch.rand(1, 3, 32, 32) * 2 - 1
    driving = torch.rand(1, 3, 3, 32, 32) * 2 - 1
    out = reenact(components, reference, driving, num_inference_steps=2)
    assert out.shape == (1, 3, 3, 32, 32) and torch.isfinite(out).all()


def test_init_overrides_and_lineage_of_an_exported_model(snapshot: Path, tmp_path: Path) -> None:
    """A model built from several runs records every one of them, with steps and wall clock."""

    def trainer(name: str, **overrides: Any) -> Trainer:
        config = make_config(
            tmp_path, output_dir=str(tmp_path / name), **{"max_steps": 1, **overrides}
        )
        return Trainer(config, snapshot, show_progress=False)

    first = trainer("first")
    first.train()
    source = str(tmp_path / "first")
    decoder = trainer(
        "decoder", stage=0, init_from=source, init_components=["vae"], vae_train_encoder=False
    )
    decoder.train()
    second = trainer(
        "second",
        stage=2,
        init_from=source,
        init_overrides={"vae": str(tmp_path / "decoder")},
        generation_defaults={"num_inference_steps": 12},
    )
    # The VAE comes from the decoder run, everything else from the first run.
    for name, source in (("vae", decoder), ("reference_unet", first)):
        expected = getattr(source.components, name).state_dict()
        actual = getattr(second.components, name).state_dict()
        assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert not torch.equal(
        decoder.components.vae.decoder.conv_out.weight, first.components.vae.decoder.conv_out.weight
    )
    folder = second.train()
    assert folder is not None
    info = json.loads((folder / "training.json").read_text())
    runs = info["stages"]
    assert [(r["name"], r["stage"], r["steps"]) for r in runs] == [
        ("first", 1, 1),
        ("decoder", 0, 1),
        ("second", 2, 1),
    ]
    assert runs[2]["init_overrides"] == {"vae": str(tmp_path / "decoder")}
    # Earlier runs are carried over exactly as their own exports recorded them.
    for run, name in ((runs[0], "first"), (runs[1], "decoder")):
        own = json.loads((tmp_path / name / "model" / "training.json").read_text())["stages"]
        assert own[-1] == run
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_generation_defaults"] == {"resolution": 32, "num_inference_steps": 12}
    assert "export_only" not in runs[2]

    # max_steps 0 only assembles and exports: the weights are exactly the sources', and the
    # run is recorded as an export, not as training.
    assembly = trainer(
        "assembly",
        stage=2,
        max_steps=0,
        init_from=str(tmp_path / "first"),
        init_overrides={"vae": str(tmp_path / "decoder")},
    )
    assembled = assembly.train()
    assert assembled is not None
    last = json.loads((assembled / "training.json").read_text())["stages"][-1]
    assert (last["name"], last["steps"], last["export_only"]) == ("assembly", 0, True)
    for name, source in (("vae", decoder), ("denoising_unet", first)):
        expected = getattr(source.components, name).state_dict()
        actual = getattr(assembly.components, name).state_dict()
        assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_recommended_settings_are_checked_before_training(tmp_path: Path) -> None:
    from reenactment.engine.configs import GenerationDefaultsError

    with pytest.raises(GenerationDefaultsError, match="strength must be a number in"):
        make_config(tmp_path, generation_defaults={"strength": 2})
    with pytest.raises(GenerationDefaultsError, match="unknown setting"):
        make_config(tmp_path, generation_defaults={"guidance": 2.5})
    assert make_config(tmp_path, generation_defaults={"strength": 0.75}).generation_defaults


def test_stage0_exports_only_networks_that_fit_its_latent_space(
    snapshot: Path, tmp_path: Path
) -> None:
    """A stage-0 run trains only the autoencoder. Its export must not pass freshly built UNets
    off as a model, nor keep a denoiser next to an encoder it was not trained on."""
    from governance.integrations.model_files import ModelFolderInvalidError, model_folder_check
    from reenactment.engine.loading import ModelFolderNotFoundError
    from reenactment.engine.pipeline_reenactment import ReenactmentPipeline

    def run(name: str, **overrides: Any) -> Trainer:
        config = make_config(
            tmp_path, output_dir=str(tmp_path / name), **{"max_steps": 1, **overrides}
        )
        trainer = Trainer(config, snapshot, show_progress=False)
        trainer.train()
        return trainer

    def held(name: str) -> list[str]:
        return sorted(p.name for p in (tmp_path / name / "model").iterdir() if p.is_dir())

    full = run("full")
    assert held("full") == sorted(
        ["reference_unet", "denoising_unet", "motion_encoder", "vae", "image_encoder", "scheduler"]
    )

    # From scratch: the autoencoder alone, named alone in the index; no release files.
    run("scratch", stage=0)
    folder = tmp_path / "scratch" / "model"
    assert held("scratch") == ["vae"]
    index = json.loads((folder / "model_index.json").read_text())
    assert [k for k in index if not k.startswith("_")] == ["vae"]
    assert not (tmp_path / "scratch" / "official").exists()
    incomplete = "not a complete model: it has no reference_unet, denoising_unet, motion_encoder"
    with pytest.raises(FileNotFoundError, match=incomplete):
        load_model_folder(folder)
    with pytest.raises(ModelFolderNotFoundError, match=incomplete):
        ReenactmentPipeline.from_model_folder(folder)
    with pytest.raises(ModelFolderInvalidError, match=incomplete):
        model_folder_check(folder)
    # ... and a later stage takes exactly that from it.
    stage1 = Trainer(
        make_config(tmp_path, output_dir=str(tmp_path / "s1"), init_from=str(folder)),
        snapshot,
        show_progress=False,
    )
    assert stage1.loaded_networks == {"vae"}

    # Decoder only, from a complete model: the latent space is unchanged, so the export is a
    # complete model again, with the source's other networks exactly.
    decoder = run("decoder", stage=0, init_from=str(tmp_path / "full"), vae_train_encoder=False)
    assert held("decoder") == held("full")
    components = load_model_folder(tmp_path / "decoder")
    for name in ("reference_unet", "denoising_unet", "motion_encoder", "image_encoder"):
        expected = getattr(full.components, name).state_dict()
        actual = getattr(components, name).state_dict()
        assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert not torch.equal(
        components.vae.decoder.conv_out.weight, full.components.vae.decoder.conv_out.weight
    )
    assert decoder.exported_networks() != ("vae",)
    # The encoder retrained: the source's denoiser no longer fits, so only the VAE is exported.
    run("encoder", stage=0, init_from=str(tmp_path / "full"))
    assert held("encoder") == ["vae"]


def test_widened_latent_computes_what_the_narrow_model_did(snapshot: Path, tmp_path: Path) -> None:
    """``init_widen_latent`` + ``vae_encoder_train_channels_from``: a model trained on 4 latent
    channels, widened to 6, animates exactly as before; stage 0 then trains only the new
    channels' encoder rows and the decoder, and the export recalibrates only those channels."""
    from reenactment.engine.training.components import ModelConfig
    from reenactment.engine.training.sampling import reenact

    narrow = Trainer(
        make_config(tmp_path, output_dir=str(tmp_path / "narrow"), max_steps=1),
        snapshot,
        show_progress=False,
    )
    narrow.train()
    wide_model = {
        **TINY_MODEL,
        "vae": {**TINY_MODEL["vae"], "latent_channels": 6},
        "unet": {**TINY_MODEL["unet"], "in_channels": 6, "out_channels": 6},
    }
    options: dict[str, Any] = {
        "stage": 0,
        "model": wide_model,
        "init_from": str(tmp_path / "narrow"),
        "vae_train_encoder": False,
        "vae_encoder_train_channels_from": 4,
        "max_steps": 2,
    }
    # Without the option the shapes do not load (strictly), and the run says why.
    with pytest.raises(InitialWeightsError, match="size mismatch"):
        Trainer(make_config(tmp_path / "strict", **options), snapshot, show_progress=False)
    wide = Trainer(
        make_config(tmp_path / "wide", init_widen_latent=True, **options),
        snapshot,
        show_progress=False,
    )
    old, new = narrow.components, wide.components
    images = wide._batch(0)["target"].transpose(1, 2).flatten(0, 1)
    with torch.no_grad():
        old_latents = old.vae.encode(images).latent_dist.mean
        new_latents = new.vae.encode(images).latent_dist.mean
        assert new_latents.shape[1] == 6
        assert torch.equal(new_latents[:, :4], old_latents)
        assert new_latents[:, 4:].abs().sum() > 0  # the new channels carry something
        assert torch.allclose(
            new.vae.decode(new_latents, num_frames=2).sample,
            old.vae.decode(old_latents, num_frames=2).sample,
            atol=1e-5,
        )
    reference = torch.rand(1, 3, 32, 32) * 2 - 1
    driving = torch.rand(1, 3, 2, 32, 32) * 2 - 1
    settings: dict[str, Any] = {"num_inference_steps": 3, "seed": 5}
    assert torch.allclose(
        reenact(new, reference, driving, **settings),
        reenact(old, reference, driving, **settings),
        atol=1e-4,
    )

    before = all_parameters(wide)
    for _ in range(2):
        wide.train_step()
    moved = changed(before, all_parameters(wide))
    assert "vae.encoder.conv_out.weight" in moved
    assert all(k.startswith(("vae.decoder.", "vae.encoder.conv_out.")) for k in moved)
    with torch.no_grad():
        assert torch.equal(new.vae.encode(images).latent_dist.mean[:, :4], old_latents)
    folder = wide.export()
    assert folder is not None
    # A complete model again (the UNets are the widened ones), and the old channels unscaled.
    assert (folder / "denoising_unet").is_dir()
    exported = load_model_folder(folder)
    with torch.no_grad():
        latents = exported.vae.encode(images).latent_dist.mean
    assert torch.allclose(latents[:, :4], old_latents, atol=2e-3)  # float16 export
    info = json.loads((folder / "training.json").read_text())
    before_calibration = torch.tensor(info["vae_latent_stats_before_calibration"])
    assert before_calibration.shape == (2, 6)

    # Stage 1 on a retrained 6-channel autoencoder: the UNets widened from the narrow run, the
    # VAE taken as it is; the denoiser starts by predicting zero noise for the new channels.
    stage1 = Trainer(
        make_config(
            tmp_path / "s1",
            model=wide_model,
            init_from=str(tmp_path / "narrow"),
            init_widen_latent=True,
            init_overrides={"vae": str(folder)},
        ),
        snapshot,
        show_progress=False,
    )
    denoiser = stage1.components.denoising_unet
    assert denoiser.conv_out.weight.shape[0] == 6
    assert not denoiser.conv_out.weight[4:].any() and denoiser.conv_out.weight[:4].any()
    assert torch.isfinite(torch.tensor(stage1.train_step()["loss"]))

    with pytest.raises(ValueError, match="vae_encoder_train_channels_from"):
        make_config(tmp_path, stage=0, vae_encoder_train_channels_from=4)  # encoder trains
    with pytest.raises(ValueError, match="latent channels but the UNet config"):
        ModelConfig.from_dict({**TINY_MODEL, "vae": wide_model["vae"]})


def test_widening_refuses_what_is_not_the_same_network_with_more_channels() -> None:
    from reenactment.engine.training.latent_expansion import (
        LatentExpansionError,
        widen_latent_state,
    )

    old = {"conv_in.weight": torch.ones(8, 4, 3, 3)}
    wide = {"conv_in.weight": torch.zeros(8, 6, 3, 3)}
    widened = widen_latent_state("denoising_unet", old, wide, 4, 6)["conv_in.weight"]
    assert widened[:, :4].eq(1).all() and not widened[:, 4:].any()
    with pytest.raises(LatentExpansionError, match="must grow"):
        widen_latent_state("denoising_unet", old, old, 4, 4)
    with pytest.raises(LatentExpansionError, match="cannot be widened"):
        widen_latent_state(
            "denoising_unet", old, {"conv_in.weight": torch.zeros(16, 6, 3, 3)}, 4, 6
        )
    with pytest.raises(LatentExpansionError, match="cannot be widened"):
        widen_latent_state("motion_encoder", old, wide, 4, 6)  # no latent input there
    with pytest.raises(LatentExpansionError, match="parameters differ"):
        widen_latent_state("denoising_unet", old, {**wide, "extra.bias": torch.zeros(2)}, 4, 6)


def test_cli_refuses_an_init_folder_that_cannot_start_the_run(
    snapshot: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reenactment.engine.training.__main__ import main

    first = make_config(tmp_path, output_dir=str(tmp_path / "first"), max_steps=1)
    Trainer(first, snapshot, show_progress=False).train()
    info = tmp_path / "first" / "model" / "training.json"
    config_path = tmp_path / "second.json"

    def run(init_from: str) -> int:
        config = make_config(tmp_path, output_dir=str(tmp_path / "second"), init_from=init_from)
        config_path.write_text(json.dumps(config.to_dict()))
        return main(["--config", str(config_path), "--manifest", str(snapshot)])

    assert run(str(tmp_path / "missing")) == 2
    assert "cannot start from" in capsys.readouterr().err
    text = info.read_text()
    info.write_text(text[: len(text) // 2])  # cut short
    assert run(str(tmp_path / "first")) == 2
    assert "training.json: unreadable" in capsys.readouterr().err
    info.write_text(json.dumps({**json.loads(text), "stages": "all of them"}))
    assert run(str(tmp_path / "first")) == 2
    assert "'stages' must be a list of runs" in capsys.readouterr().err
    assert not (tmp_path / "second" / "model").exists()
    info.write_text(text)
    assert run(str(tmp_path / "first")) == 0


def test_logged_wall_clock_sums_resumed_segments(tmp_path: Path) -> None:
    from reenactment.engine.training.trainer import logged_wall_clock_s

    log = tmp_path / "train_log.jsonl"
    assert logged_wall_clock_s(log) == 0.0
    records = [10.0, 20.0, 30.0, 5.0, 15.0]  # resumed after the record at 30 s
    log.write_text(
        "".join(json.dumps({"step": i, "elapsed_s": e}) + "\n" for i, e in enumerate(records))
    )
    assert logged_wall_clock_s(log) == 45.0


def test_official_size_motion_encoder_export_loads_strictly(snapshot: Path, tmp_path: Path) -> None:
    from reenactment.engine.loading import load_official_checkpoints
    from reenactment.engine.training import build_components, export_official_checkpoints
    from reenactment.engine.training.components import ModelConfig

    model = ModelConfig.from_dict({**TINY_MODEL, "motion_encoder": {"type": "official"}})
    components = build_components(model, seed=0)
    export_official_checkpoints(tmp_path, components, formats=("safetensors",))
    networks, coverage = load_official_checkpoints(tmp_path, TINY_MODEL["unet"])
    assert coverage.from_denoising_file > 0
    for name in ("reference_unet", "denoising_unet", "motion_encoder"):
        expected = getattr(components, name).state_dict()
        loaded = getattr(networks, name).state_dict()
        assert expected.keys() == loaded.keys()
        assert all(torch.equal(expected[k], loaded[k]) for k in expected)


# --------------------------------------------------------------------------- preview model


def test_spatial_baseline_trains_with_the_same_trainer(snapshot: Path, tmp_path: Path) -> None:
    from reenactment.engine.training.baseline import SpatialMotionDenoiser, SpatialMotionGuider
    from reenactment.engine.training.sampling import reenact

    config = make_config(tmp_path, model={**TINY_MODEL, "variant": "spatial_baseline"})
    trainer = Trainer(config, snapshot, show_progress=False)
    assert isinstance(trainer.components.denoising_unet, SpatialMotionDenoiser)
    assert isinstance(trainer.components.motion_encoder, SpatialMotionGuider)
    assert trainer.gan_decoder is None  # no 1-D motion latent to decode
    before = all_parameters(trainer)
    trainer.train_step()
    trainer.train_step()  # the zero-initialised guider output moves only after one step
    moved = changed(before, all_parameters(trainer))
    assert any(k.startswith("motion_encoder.conv_out.") for k in moved)
    assert not any(".motion_modules." in k or ".temporal_modules." in k for k in moved)
    assert not any(".motion_modules." in k for k in before)
    folder = trainer.export()
    assert folder is not None
    components = load_model_folder(folder)
    out = reenact(
        components,
        torch.zeros(1, 3, 32, 32),
        torch.zeros(1, 3, 2, 32, 32),
        num_inference_steps=2,
    )
    assert out.shape == (1, 3, 2, 32, 32)


def _ddp_worker(rank: int, port: int, snapshot: str, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    config = make_config(Path(out_dir), max_steps=1, max_minutes=1.0)
    trainer = Trainer(config, snapshot, show_progress=False)
    keys = trainer.sampler.keys(0)
    trainer.train_step()
    params = torch.cat([p.detach().flatten() for _, p in trainer.trainable])
    # Each rank's own clock disagrees with rank 0's: rank 0's decides for both.
    stops = [trainer._out_of_time(0.0 if rank == 0 else 1e9)]
    stops.append(trainer._out_of_time(1e9 if rank == 0 else 0.0))
    torch.save({"keys": keys, "params": params, "stops": stops}, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_ranks_split_the_data_and_stay_in_sync(snapshot: Path, tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(snapshot), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert {k[0] for k in r0["keys"]}.isdisjoint({k[0] for k in r1["keys"]})
    assert torch.equal(r0["params"], r1["params"])
    assert r0["stops"] == r1["stops"] == [False, True]


TINY_REFINER: dict[str, Any] = {
    "channels": [8, 16],
    "attention_levels": [1],
    "attention_heads": 2,
    "norm_groups": 4,
}


def test_detail_refiner_is_the_identity_until_trained_and_reads_the_portrait() -> None:
    from reenactment.engine.networks import ReferenceDetailRefiner

    torch.manual_seed(0)
    refiner = ReferenceDetailRefiner(sample_size=16, **TINY_REFINER).eval()
    frames = torch.rand(3, 3, 16, 16) * 2 - 1
    portrait = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(refiner(frames, portrait), frames)
        torch.nn.init.normal_(refiner.conv_out.weight, std=0.1)
        out = refiner(frames, portrait)
        assert not torch.allclose(out, frames, atol=1e-3)
        # The portrait's details are what it adds: another portrait, another result.
        assert not torch.allclose(refiner(frames, torch.rand(1, 3, 16, 16) * 2 - 1), out)
        # Cached portrait features, and one portrait per frame, give the same result.
        features = refiner.encode_reference(portrait)
        torch.testing.assert_close(refiner(frames, reference_features=features), out)
        torch.testing.assert_close(refiner(frames, portrait.expand(3, -1, -1, -1)), out)
        # Frames are refined independently of each other.
        torch.testing.assert_close(refiner(frames[1:2], portrait), out[1:2])
    with pytest.raises(ValueError, match=r"takes \(N, 3, 16, 16\)"):
        refiner(torch.rand(1, 3, 32, 32), portrait)
    with pytest.raises(ValueError, match="needs the portrait"):
        refiner(frames)
    with pytest.raises(ValueError, match="attention_levels"):
        ReferenceDetailRefiner(sample_size=16, channels=(8, 16), attention_levels=(2,))


def test_warping_refiner_moves_the_portraits_own_pixels() -> None:
    """With ``warp`` the refiner blends in the portrait resampled along a predicted flow: the
    identity until trained, the portrait itself at zero flow and a full mask, and the
    portrait shifted by exactly the flow's offset."""
    from reenactment.engine.networks import ReferenceDetailRefiner
    from reenactment.engine.networks.detail_refiner import WARP_GATE_SCALE

    torch.manual_seed(0)
    refiner = ReferenceDetailRefiner(sample_size=16, warp=True, **TINY_REFINER).eval()
    frames = torch.rand(2, 3, 16, 16) * 2 - 1
    portrait = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(refiner(frames, portrait), frames)
        # Its parts: the portrait itself at zero flow, none of it let in while the gate is shut.
        parts = refiner(frames, portrait, return_parts=True)
        assert torch.equal(parts.sample, frames)
        torch.testing.assert_close(parts.warped, portrait.expand(2, -1, -1, -1))
        assert parts.mask.shape == (2, 1, 16, 16) and not parts.mask.any()
        refiner.warp_gate.fill_(1.0 / WARP_GATE_SCALE)
        refiner.warp_out.bias[2] = 100.0  # the mask saturates at 1
        torch.testing.assert_close(refiner(frames, portrait), portrait.expand(2, -1, -1, -1))
        # A flow of two pixels to the right (in [-1, 1] units: 2 * 2 / 16) samples each output
        # pixel from two columns further right.
        refiner.warp_out.bias[0] = 4 / 16
        parts = refiner(frames, portrait, return_parts=True)
        shifted = refiner(frames, portrait)
        torch.testing.assert_close(shifted[..., :-2], portrait[..., 2:].expand(2, -1, -1, -1))
        torch.testing.assert_close(parts.sample, shifted)
        torch.testing.assert_close(parts.warped, shifted)  # the mask is 1 everywhere
        torch.testing.assert_close(parts.mask, torch.ones(2, 1, 16, 16))
    plain = ReferenceDetailRefiner(sample_size=16, **TINY_REFINER).eval()
    with torch.no_grad():
        parts = plain(frames, portrait, return_parts=True)
    assert torch.equal(parts.sample, frames) and parts.warped is None and parts.mask is None


def test_stage3_warp_weight_trains_the_flow_on_the_warped_portrait(
    snapshot: Path, tmp_path: Path
) -> None:
    """``refiner_warp_weight`` holds the warped portrait alone to the target. A fresh warping
    refiner lets none of the portrait in (its gate is shut), so without that loss its first step
    gives the flow no gradient at all; with it the flow moves at once, and the logged warp error
    is the portrait's own distance to the targets (zero flow)."""
    from reenactment.engine.training.losses import reconstruction_loss

    options: dict[str, Any] = {
        "stage": 3,
        "model": {**TINY_MODEL, "detail_refiner": {**TINY_REFINER, "warp": True}},
        "max_steps": 1,
        "weight_decay": 0.0,
    }
    flows = {}
    for weight in (0.0, 1.0):
        trainer = Trainer(
            make_config(
                tmp_path,
                output_dir=str(tmp_path / f"w{weight}"),
                refiner_warp_weight=weight,
                **options,
            ),
            snapshot,
            show_progress=False,
        )
        refiner = trainer.components.detail_refiner
        batch = trainer._batch(0)
        before = refiner.warp_out.weight.detach().clone()
        logs = trainer.train_step()
        flows[weight] = not torch.equal(before, refiner.warp_out.weight)
        if weight:
            frames = batch["target"].shape[2]
            # b c f h w -> (b f) c h w, each frame with its clip's reference
            targets = batch["target"].transpose(1, 2).flatten(0, 1)
            portraits = batch["reference"].repeat_interleave(frames, dim=0)
            expected = float(reconstruction_loss(portraits, targets))
            assert logs["warp_rec"] == pytest.approx(expected, rel=1e-5)
            assert logs["mask"] == 0.0
        else:
            assert "warp_rec" not in logs
    assert flows == {0.0: False, 1.0: True}
    # Refused before anything trains: outside stage 3, negative, or a refiner that cannot warp.
    with pytest.raises(ValueError, match="refiner_warp_weight"):
        make_config(tmp_path, stage=1, refiner_warp_weight=1.0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="refiner_warp_weight"):
            make_config(tmp_path, **{**options, "refiner_warp_weight": bad})
    with pytest.raises(ValueError, match="needs a refiner that warps"):
        Trainer(
            make_config(
                tmp_path,
                **{**options, "model": {**TINY_MODEL, "detail_refiner": TINY_REFINER}},
                refiner_warp_weight=1.0,
            ),
            snapshot,
            show_progress=False,
        )


def test_stage3_trains_only_the_detail_refiner_and_exports_a_model_that_uses_it(
    snapshot: Path, tmp_path: Path
) -> None:
    """Stage 3 starts from a complete model, trains the refiner alone on the frozen
    autoencoder's round trips, and exports that model plus the refiner; the benchmark's sampler,
    the product pipeline and the model registry all pick the refiner up."""
    from governance.integrations.model_files import model_folder_check
    from reenactment.engine.pipeline_reenactment import ReenactmentPipeline
    from reenactment.engine.training.export import MODEL_SUBFOLDERS
    from reenactment.engine.training.sampling import reenact

    full = Trainer(
        make_config(tmp_path, output_dir=str(tmp_path / "full"), max_steps=1),
        snapshot,
        show_progress=False,
    )
    full.train()
    options: dict[str, Any] = {
        "stage": 3,
        "model": {**TINY_MODEL, "detail_refiner": TINY_REFINER},
        "init_from": str(tmp_path / "full"),
        "refiner_latent_noise": 0.5,
        "max_steps": 2,
    }
    trainer = Trainer(
        make_config(tmp_path, output_dir=str(tmp_path / "refiner"), **options),
        snapshot,
        show_progress=False,
    )
    assert trainer.loaded_networks == set(MODEL_SUBFOLDERS)
    before = all_parameters(trainer)
    logs = trainer.train_step()
    moved = changed(before, all_parameters(trainer))
    assert moved and all(k.startswith("detail_refiner.") for k in moved)
    # Its first step sees an untrained refiner: the identity, so no better than its input.
    assert logs["rec"] == pytest.approx(logs["rec_input"], rel=1e-5)
    logs = trainer.train_step()
    assert logs["rec"] != pytest.approx(logs["rec_input"], rel=1e-5)
    folder = trainer.export()
    assert folder is not None
    held = sorted(p.name for p in folder.iterdir() if p.is_dir())
    assert held == sorted([*MODEL_SUBFOLDERS, "scheduler", "detail_refiner"])
    index = json.loads((folder / "model_index.json").read_text())
    assert index["detail_refiner"] == [
        "reenactment.engine.networks.detail_refiner",
        "ReferenceDetailRefiner",
    ]

    components = load_model_folder(folder)
    assert components.detail_refiner is not None
    for name in MODEL_SUBFOLDERS:
        expected = getattr(full.components, name).state_dict()
        actual = getattr(components, name).state_dict()
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name
    reference = torch.rand(1, 3, 32, 32) * 2 - 1
    driving = torch.rand(1, 3, 2, 32, 32) * 2 - 1
    source = reenact(full.components, reference, driving, num_inference_steps=2)
    without = reenact(components, reference, driving, num_inference_steps=2, refine_details=False)
    refined = reenact(components, reference, driving, num_inference_steps=2)
    torch.testing.assert_close(without, source)
    assert not torch.allclose(refined, source, atol=1e-4)

    pipe = ReenactmentPipeline.from_model_folder(folder)
    assert isinstance(pipe.detail_refiner, type(components.detail_refiner))
    state = components.detail_refiner.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pipe.detail_refiner.state_dict().items())
    assert ReenactmentPipeline.from_model_folder(tmp_path / "full" / "model").detail_refiner is None
    architecture = model_folder_check(folder).architecture
    assert "detail_refiner" in architecture["components"]

    # Inputs from the model's own sampler: the first step's input is exactly what the sampler
    # makes of the batch (the refiner is still the identity), and again only the refiner trains.
    sampled = Trainer(
        make_config(
            tmp_path,
            output_dir=str(tmp_path / "sampled"),
            **{**options, "refiner_sampled_probability": 1.0, "refiner_latent_noise": 0.0},
            generation_defaults={"num_inference_steps": 2, "strength": 0.5},
        ),
        snapshot,
        show_progress=False,
    )
    batch = sampled._batch(0)
    before = all_parameters(sampled)
    logs = sampled.train_step()
    assert logs["sampled"] == 1.0
    assert changed(before, all_parameters(sampled)) == moved
    # The step's generator draws whether to sample, then the sampler's seed.
    generator = torch.Generator().manual_seed(step_seed(sampled.config.seed, 0, 0))
    float(torch.rand((), generator=generator))
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    generated = reenact(
        full.components,
        batch["reference"],
        batch["driving"],
        num_inference_steps=2,
        strength=0.5,
        seed=seed,
    )
    expected = float((generated - batch["target"]).abs().mean())
    assert logs["rec_input"] == pytest.approx(expected, rel=1e-5)
    assert logs["rec"] == pytest.approx(logs["rec_input"], rel=1e-5)
    with pytest.raises(ValueError, match="needs a trained model to sample from"):
        Trainer(
            make_config(
                tmp_path, **{**options, "init_from": None, "refiner_sampled_probability": 0.5}
            ),
            snapshot,
            show_progress=False,
        )

    # Refused before anything trains: a model without a refiner, the noise outside stage 3.
    with pytest.raises(ValueError, match='set the model option "detail_refiner"'):
        Trainer(make_config(tmp_path, stage=3), snapshot, show_progress=False)
    with pytest.raises(ValueError, match="refiner_latent_noise"):
        make_config(tmp_path, stage=1, refiner_latent_noise=0.1)
    with pytest.raises(ValueError, match="must be the model's resolution"):
        Trainer(
            make_config(
                tmp_path,
                stage=3,
                model={**TINY_MODEL, "detail_refiner": {**TINY_REFINER, "sample_size": 64}},
            ),
            snapshot,
            show_progress=False,
        )


def test_every_committed_recipe_is_a_valid_training_config() -> None:
    """The recipes README's commands run these files: a typo or a removed option would only
    surface when someone retrains (on a lent GPU, the lease's minutes)."""
    recipes = sorted(
        (Path(__file__).resolve().parents[2] / "reenactment/engine/training/recipes").glob("*.json")
    )
    assert len(recipes) >= 30
    for path in recipes:
        config = TrainingConfig.from_dict(json.loads(path.read_text()))
        assert config.output_dir.startswith("var/training/"), path.name
