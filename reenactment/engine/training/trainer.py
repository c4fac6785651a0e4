"""End-to-end X-NeMo trainer (stages 0, 1 and 2), single process or DDP under ``torchrun``.

Stages (spec sec. 5; the release itself is inference-only):

* **stage 0** - only for small models with a tiny VAE: trains the VAE as an autoencoder on the
  snapshot's frames (L1 + random-feature perceptual + small KL), then standardises its latent
  channels so that ``0.18215 * latent`` has zero mean and unit variance (exact reparametrisation;
  see :mod:`.components`). Its export holds the VAE alone (a starting point for stage 1 via
  ``init_from``/``init_overrides``, refused as a model by the pipeline and the registry), unless
  it fine-tuned only the decoder of a complete model: the latent space is then unchanged and the
  export is that model with the new decoder (:meth:`Trainer.exported_networks`).
* **stage 1** - image-level: the reference UNet, the denoising UNet **without** its temporal
  modules, the motion encoder and the motion cross-attention (``motion_modules``) are trained
  jointly with the diffusion loss; the dual GAN decoder (:mod:`.gan_decoder`) reconstructs the
  driving frames from the motion latent and sends its reconstruction/adversarial/feature-matching/
  perceptual gradients into the motion encoder. The driving frames are augmented
  (:mod:`.augmentations`) and about 30 % of the reference tokens handed to each denoiser block are
  dropped. The temporal modules stay frozen (they are zero-initialised, i.e. identities).
* **stage 2** - clip-level: only the ``temporal_modules`` are trained; everything else is frozen.

Classifier-free guidance is trained by making a whole step unconditional with probability
``uncond_probability``: zero CLIP token, no reference features, and the reference image's own
motion as the motion input - exactly the release's negative branch.

Determinism and resumption: all randomness of step ``k`` (data keys, augmentations, timesteps,
noise, dropped tokens, unconditional steps, global RNG for dropout) is derived from
``(seed, k, rank)``, and a checkpoint holds networks, optimisers, LR schedule, EMA and the RNG
states, written atomically. A resumed run therefore continues bit for bit as an uninterrupted one
would (on the same hardware and thread count).

Multi-GPU: when ``WORLD_SIZE > 1`` (``torchrun``) the process group is initialised from the
environment, each rank takes its own clips (a :class:`~torch.utils.data.DistributedSampler`
permutation per epoch) and gradients are averaged with ``all_reduce`` before every optimiser
step. Gradients are reduced explicitly rather than through ``DistributedDataParallel`` wrappers
because the reference UNet reaches the loss only through the banks it writes (a side channel DDP
cannot see) and part of it never receives gradients; the arithmetic is the same as DDP's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..configs import check_generation_defaults
from ..loading import DETAIL_REFINER
from ..networks import clear_reference_banks, load_reference_banks
from ..networks.reference_attention import run_reference_pass
from .augmentations import AugmentationConfig
from .components import (
    LATENT_SCALE,
    ModelConfig,
    build_components,
    encode_clip,
    is_vae_temporal_parameter,
    vae_encode,
)
from .datasets import ClipDataset, SampleConfig, StepSampler, collate
from .export import (
    MODEL_SUBFOLDERS,
    export_official_checkpoints,
    present_networks,
    save_model_folder,
)
from .gan_decoder import DualDiscriminator, MotionDecoder, PatchDiscriminator
from .losses import (
    RandomFeaturePerceptualLoss,
    diffusion_loss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    kl_loss,
    reconstruction_loss,
)
from .manifest import SnapshotManifest, SnapshotStatusChecker, read_manifest

TEMPORAL_MARKER = ".temporal_modules."
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "state.pt"
#: 0 autoencoder, 1 image-level X-NeMo, 2 temporal modules, 3 detail refiner.
STAGES = (0, 1, 2, 3)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class GanConfig:
    """Dual GAN decoder of stage 1 (loss weights are per term).

    Args:
        enabled: Train the decoder (ignored for the spatial baseline, which has no 1-D latent).
        learning_rate: Adam learning rate of the decoder and the discriminators.
        weight: Overall weight of the decoder's generator loss in the stage-1 objective.
        reconstruction_weight: L1 weight.
        perceptual_weight: Random-feature perceptual weight.
        adversarial_weight: Hinge generator weight.
        feature_matching_weight: Feature-matching weight.
        adversarial_start: Step from which the adversarial and feature-matching terms count.
    """

    enabled: bool = True
    learning_rate: float = 2e-4
    weight: float = 0.1
    reconstruction_weight: float = 1.0
    perceptual_weight: float = 0.5
    adversarial_weight: float = 0.05
    feature_matching_weight: float = 1.0
    adversarial_start: int = 200


class InitialWeightsError(ValueError):
    """``init_from`` / ``init_overrides`` name a folder that cannot start this run."""


@dataclass
class TrainingConfig:
    """One training run (JSON with the same keys; ``model`` may name a ``preset``).

    Args:
        stage: 0 (tiny VAE), 1 (image-level X-NeMo), 2 (temporal modules) or 3 (the detail
            refiner alone, on the frozen autoencoder's round trips or the model's own
            generations; the model needs the ``detail_refiner`` option).
        model: Network sizes and sources (:class:`ModelConfig`).
        output_dir: Checkpoints, logs and the exported model.
        init_from: A run folder (its ``model/``) or model folder to start from (stage 1 after
            stage 0, stage 2 after stage 1).
        init_components: Which networks to take from ``init_from`` (default: all it holds).
        init_widen_latent: The folders of ``init_from`` / ``init_overrides`` may have fewer latent
            channels than ``model``: widen their networks so that they compute exactly what
            they did, ignoring the new channels and predicting zero noise for them
            (:mod:`.latent_expansion`).
        init_overrides: Networks to take from other run or model folders after ``init_from``,
            e.g. ``{"vae": "var/training/decoder_run"}`` (a VAE decoder fine-tuned separately).
        max_steps: Optimisation steps. 0 trains nothing: the run assembles ``init_from`` and
            ``init_overrides`` and exports them (recorded as ``export_only``).
        max_minutes: Wall-clock budget of this invocation's training loop (0: none). The run
            stops after the first step that ends past it, saves a checkpoint and exports as
            if ``max_steps`` had been reached; the steps actually run are recorded. For a
            lease of fixed length (a borrowed GPU): ``--resume`` continues towards
            ``max_steps`` later.
        batch_size: Clips per step and process.
        frames: Frames per clip sample (stage 1: independent images sharing a reference).
        frame_stride: Stride of the frame window.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        adam_betas: AdamW betas.
        warmup_steps: Linear warm-up of the learning rate.
        max_grad_norm: Gradient clipping (0 disables).
        x0_weight_cap: When > 0, weight each sample's epsilon loss by
            ``clamp(1 / SNR(t), 1, x0_weight_cap)`` (normalised by its mean over t): beyond the
            point where the epsilon and x0 losses cross it becomes an x0 loss. The plain epsilon
            loss barely trains the high-noise steps (an epsilon error e is an x0 error
            ``e / sqrt(alpha_bar)``, 45x at t = 950 with the release's schedule), where the
            release's sampler starts; small models trained briefly then commit to garbage in
            the first DDIM steps. 0 keeps the plain loss.
        reference_mask_ratio: Share of reference tokens dropped per block (stage 1).
        uncond_probability: Share of unconditional (CFG) steps.
        augment: Augment the driving frames.
        augmentation: Augmentation probabilities and strengths.
        cross_identity_probability: Stages 1 and 3: chance that a clip whose manifest line names a
            ``driving_clip_id`` (a SynthFace cross-reenactment render) is driven by that clip of
            another identity instead of its own frames (:class:`.datasets.ClipDataset`). 0, the
            paper's self-reenactment training, by default.
        reference_other_clip_probability: Stages 1 and 3: chance that the reference frame comes
            from another clip of the same person(s) instead of the target's own clip (0 by
            default).
        reference_start_probability: Stage 1: share of (conditional) samples whose noisy input
            is built from the *reference's* latent instead of the target's, at a timestep drawn
            from ``reference_start_timesteps``, with the loss still towards the target (the
            epsilon that maps that input to the target's latent). This is what the pipeline
            feeds the denoiser with ``initial_latents`` ``"reference"`` and ``strength`` < 1:
            the portrait's pose under noise. Trained only on noised targets, a denoiser reads
            the pose from its input and keeps the portrait's; these samples make it take the
            pose from the motion tokens. 0 (the paper's training) by default; preview model
            v6 was trained with 0.5 (its model card has the measured effect).
        reference_start_timesteps: ``[low, high)`` training timesteps of those samples. Keep
            ``low`` high (strength 0.5 starts the pipeline near t = 500): near t = 0 the epsilon
            that bridges portrait and target is divided by sqrt(1 - abar) and becomes huge.
        train_timesteps: ``[low, high)`` timesteps of every other sample (stages 1 and 2; the
            whole schedule by default). A model that is only ever sampled below a ``strength``
            (0.5 starts 20-step DDIM at t = 451) never runs the steps above it; fine-tuned on
            ``[0, 500)`` it spends its capacity on the steps it runs, which the whole schedule
            under ``x0_weight_cap`` gives less than a tenth of the loss's weight.
        gan: The GAN decoder (stage 1).
        vae_kl_weight: Stage 0 KL weight.
        vae_perceptual_weight: Stages 0 and 3: perceptual weight.
        vae_latent_noise: Stage 0 posterior sampling (0: decode the posterior mean, a plain
            autoencoder - what the diffusion model and the pipeline use; 1: the usual VAE).
        vae_train_encoder: Stage 0 trains the encoder too. False fine-tunes only the decoder:
            the latent space stays fixed, so an improved decoder can replace the old one in models
            already trained on those latents (and no recalibration happens).
        vae_encoder_train_channels_from: Stage 0 with ``vae_train_encoder`` false: also train
            the encoder's output rows (posterior mean and log-variance) of the latent channels
            from this index on - the only part of the encoder that trains - and recalibrate only
            those channels at export. The channels below keep their exact values, so networks
            trained on them stay valid: the second half of widening a latent space
            (``init_widen_latent``).
        vae_adversarial_weight: Stages 0 and 3: weight of a patch discriminator's hinge loss on
            the reconstructions, or the refined frames (0 disables), scaled each step as in
            taming-transformers' VQGAN by ``|grad rec| / |grad adv|`` at the trained network's
            last layer (the decoder's, the refiner's), so one weight holds whatever the size of
            the other losses. L1 and perceptual losses alone average what the latents leave open
            into blur (at 64 px: eyes and mouths dlib cannot find).
        vae_adversarial_start: Stages 0 and 3: first step of the adversarial term (the
            discriminator trains from the same step).
        vae_discriminator_learning_rate: Stages 0 and 3: Adam learning rate of that
            discriminator.
        refiner_latent_noise: Stage 3: each sample's latents are perturbed, before decoding, by
            Gaussian noise of up to this share of their standard deviation (uniformly drawn per
            sample; 0: exact round trips). The denoiser's latents are not the encoder's, and a
            refiner that only ever saw clean round trips would meet blurrier frames in use.
        refiner_sampled_probability: Stage 3: share of steps whose inputs are the model's own
            generations instead of round trips: the batch's references animated with its driving
            frames by the loaded model (the sampler at ``generation_defaults``, no colour match,
            as a platform job decodes them). Needs a complete model in ``init_from``; with
            ``cross_identity_probability`` the drivers are other identities performing the
            targets' motion, as in use.
        refiner_warp_weight: Stage 3, a refiner with ``warp``: weight of the same L1 +
            perceptual loss between the *warped portrait alone* and the target (0 disables).
            The refined frame's loss reaches the flow only through the mask's share, and where
            the flow is still rough, blending the sharp but misplaced portrait out and keeping
            the decoded smear costs less; supervising the warp itself makes the flow place the
            portrait's features, so that the mask can let them in.
        mixed_precision: ``"no"``, ``"bf16"`` (CUDA or CPU) or ``"fp16"`` (CUDA, with scaling).
        gradient_checkpointing: Recompute activations of the big blocks in backward.
        ema_decay: Exponential moving average of the trainable weights (0 disables); the export
            uses the averaged weights.
        seed: Run seed.
        log_every: Steps between log lines.
        save_every: Steps between checkpoints (0: only at the end).
        keep_checkpoints: Checkpoints kept on disk.
        export_dtype: ``"float32"`` or ``"float16"`` storage of the exported model folder.
        export_formats: Formats of the four-file export.
        generation_defaults: Settings written to the exported ``model_index.json`` as
            ``_generation_defaults`` (what a platform worker uses unless a job says otherwise),
            on top of ``{"resolution": <training resolution>}``: a model trained at 64x64 only
            works at 64x64.
        num_workers: DataLoader worker processes (0 = load in the training process).
    """

    stage: int = 1
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "small"})
    output_dir: str = "var/training/run"
    init_from: str | None = None
    init_components: list[str] | None = None
    init_overrides: dict[str, str] = field(default_factory=dict)
    init_widen_latent: bool = False
    max_steps: int = 1000
    max_minutes: float = 0.0
    batch_size: int = 4
    frames: int = 2
    frame_stride: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    x0_weight_cap: float = 0.0
    reference_mask_ratio: float = 0.3
    uncond_probability: float = 0.1
    augment: bool = True
    augmentation: dict[str, Any] = field(default_factory=dict)
    cross_identity_probability: float = 0.0
    reference_other_clip_probability: float = 0.0
    reference_start_probability: float = 0.0
    reference_start_timesteps: tuple[int, int] = (500, 1000)
    train_timesteps: tuple[int, int] = (0, 1000)
    gan: dict[str, Any] = field(default_factory=dict)
    vae_kl_weight: float = 1e-6
    vae_perceptual_weight: float = 0.2
    vae_latent_noise: float = 0.0
    vae_train_encoder: bool = True
    vae_encoder_train_channels_from: int | None = None
    vae_adversarial_weight: float = 0.0
    vae_adversarial_start: int = 0
    vae_discriminator_learning_rate: float = 2e-4
    refiner_latent_noise: float = 0.0
    refiner_sampled_probability: float = 0.0
    refiner_warp_weight: float = 0.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0
    seed: int = 0
    log_every: int = 10
    save_every: int = 0
    keep_checkpoints: int = 2
    export_dtype: str = "float32"
    export_formats: tuple[str, ...] = ("safetensors",)
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(map(str, STAGES))}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError("mixed_precision must be 'no', 'bf16' or 'fp16'")
        if not self.max_minutes >= 0:
            raise ValueError("max_minutes must be >= 0 (0: no time limit)")
        if not 0.0 <= self.reference_mask_ratio < 1.0:
            raise ValueError("reference_mask_ratio must be in [0, 1)")
        if self.vae_adversarial_weight < 0 or self.vae_adversarial_start < 0:
            raise ValueError("vae_adversarial_weight and vae_adversarial_start must be >= 0")
        if self.vae_adversarial_weight > 0 and self.stage not in (0, 3):
            # Stages 1 and 2 never decode with a trainable network: refuse rather than ignore it.
            raise ValueError("vae_adversarial_weight applies to stages 0 and 3 only")
        for name in ("refiner_latent_noise", "refiner_sampled_probability", "refiner_warp_weight"):
            value = getattr(self, name)
            # "not >= 0" also refuses NaN, which every comparison lets through.
            if not value >= 0 or (value > 0 and self.stage != 3):
                raise ValueError(f"{name} must be >= 0 and applies to stage 3 only")
        if self.refiner_sampled_probability > 1:
            raise ValueError("refiner_sampled_probability must be in [0, 1]")
        if self.vae_encoder_train_channels_from is not None and (
            self.stage != 0 or self.vae_train_encoder or self.vae_encoder_train_channels_from < 1
        ):
            raise ValueError(
                "vae_encoder_train_channels_from needs stage 0 with vae_train_encoder false and "
                "an index >= 1 (the channels below it stay fixed)"
            )
        for name in (
            "cross_identity_probability",
            "reference_other_clip_probability",
            "reference_start_probability",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        for name in ("reference_start_timesteps", "train_timesteps"):
            window = tuple(getattr(self, name))
            if len(window) != 2 or not 0 <= window[0] < window[1] <= 1000:
                raise ValueError(
                    f"{name} must be [low, high) with 0 <= low < high <= 1000, got {list(window)}"
                )
            setattr(self, name, window)
        # Checked now, not when the export writes them hours later (GenerationDefaultsError).
        check_generation_defaults(self.generation_defaults)
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]
        self.export_formats = tuple(self.export_formats)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrainingConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def gan_config(self) -> GanConfig:
        return GanConfig(**self.gan)

    @property
    def augmentation_config(self) -> AugmentationConfig:
        data = dict(self.augmentation)
        if "face_crop_context" in data:
            data["face_crop_context"] = tuple(data["face_crop_context"])
        return AugmentationConfig(**data)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def step_seed(seed: int, step: int, rank: int, purpose: int = 0) -> int:
    """A 62-bit seed for one purpose of one step on one rank."""
    state = np.random.SeedSequence([seed, step, rank, purpose]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(2))


def mask_reference_banks(
    banks: Mapping[str, torch.Tensor], ratio: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Keep a random ``1 - ratio`` share of each bank's tokens (independently per row).

    Token order is irrelevant to the reference attention (no positional term on the keys), so the
    kept tokens are simply gathered.
    """
    if ratio <= 0:
        return dict(banks)
    out = {}
    for name in sorted(banks):
        bank = banks[name]  # (B, L, C)
        rows, length, channels = bank.shape
        keep = max(1, round(length * (1.0 - ratio)))
        order = torch.rand(rows, length, generator=generator).argsort(dim=1)[:, :keep]
        index = order.to(bank.device)[..., None].expand(rows, keep, channels)
        out[name] = bank.gather(1, index)
    return out


def is_temporal_parameter(name: str) -> bool:
    return TEMPORAL_MARKER in f".{name}"


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistributedContext:
    """Initialise ``torch.distributed`` from the ``torchrun`` environment if ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(rank=rank, world_size=world, local_rank=local_rank)


def _contiguous_group_norm_input(module: nn.Module, args: tuple[Any, ...]) -> Any:
    x = args[0]
    if torch.is_tensor(x) and not x.requires_grad and not x.is_contiguous():
        return (x.contiguous(), *args[1:])
    return None


def guard_group_norm_backward(module: nn.Module) -> None:
    """Work around a torch 2.13 CPU crash (segmentation fault) in ``GroupNorm`` backward.

    When a GroupNorm's affine parameters need gradients but its input does not, and the input is
    a permuted (channels-last strided) view - the temporal modules' input is the motion module's
    permuted output, frozen in stage 2 - the backward kernel crashes. Making such inputs
    contiguous first avoids it and changes no value.
    """
    for sub in module.modules():
        if isinstance(sub, nn.GroupNorm):
            sub.register_forward_pre_hook(_contiguous_group_norm_input)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(x) if i == 0 else (x.tolist() if isinstance(x, np.ndarray) else x)
            for i, x in enumerate(np.random.get_state())
        ],
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state[0],
            np.asarray(numpy_state[1], dtype=np.uint32),
            int(numpy_state[2]),
            int(numpy_state[3]),
            float(numpy_state[4]),
        )
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class Trainer:
    """Runs one stage of training from a snapshot manifest.

    Args:
        config: The run.
        manifest_path: The dataset-snapshot manifest (the only data source).
        status_checker: Snapshot status source (default: ``status.json`` next to the manifest).
        device: Where to train (default: the local CUDA device, else CPU).
        show_progress: Show a tqdm bar on the main process.
    """

    def __init__(
        self,
        config: TrainingConfig,
        manifest_path: str | os.PathLike[str],
        *,
        status_checker: SnapshotStatusChecker | None = None,
        device: str | torch.device | None = None,
        show_progress: bool = True,
    ) -> None:
        self.config = config
        self.dist = init_distributed()
        if device is None:
            device = f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.output_dir = Path(config.output_dir)
        self.show_progress = show_progress and self.dist.is_main
        # 1. Data: the manifest is checked (withdrawn snapshots refused) before anything else.
        self.manifest: SnapshotManifest = read_manifest(
            manifest_path, status_checker=status_checker
        )
        self.model_config = ModelConfig.from_dict(config.model)
        self.dataset = ClipDataset(
            self.manifest,
            SampleConfig(
                size=self.model_config.resolution,
                frames=config.frames,
                frame_stride=config.frame_stride,
                augment=config.augment and config.stage == 1,
                augmentation=config.augmentation_config,
                cross_identity_probability=(
                    config.cross_identity_probability if config.stage in (1, 3) else 0.0
                ),
                # Stage 3 too: the refiner must learn to take details from a portrait in
                # another pose than the frame, as in use.
                reference_other_clip_probability=(
                    config.reference_other_clip_probability if config.stage in (1, 3) else 0.0
                ),
            ),
        )
        self.sampler = StepSampler(
            len(self.dataset),
            config.batch_size,
            config.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        # 2. Networks.
        self.components = build_components(self.model_config, seed=config.seed)
        #: The runs the initial weights came from (their ``training.json`` ``stages``, oldest
        #: first), so an exported model documents every run behind it, not only the last one.
        self.lineage: list[dict[str, Any]] = []
        #: Networks whose weights came from earlier runs (``init_from`` / ``init_overrides``).
        self.loaded_networks: set[str] = set()
        if config.init_from:
            self._load_initial_weights(Path(config.init_from), config.init_components)
        for name, source in config.init_overrides.items():
            self._load_initial_weights(Path(source), [name])
        self.use_gan = (
            config.stage == 1 and config.gan_config.enabled and self.model_config.variant == "xnemo"
        )
        self.gan_decoder: MotionDecoder | None = None
        self.discriminator: DualDiscriminator | None = None
        self.perceptual = RandomFeaturePerceptualLoss().to(self.device)
        if self.use_gan:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + 1)
                tokens = 512
                self.gan_decoder = MotionDecoder(token_dim=tokens)
                self.discriminator = DualDiscriminator()
        if config.stage == 3 and self.components.detail_refiner is None:
            raise ValueError(
                "stage 3 trains the detail refiner, and the model has none: set the model "
                'option "detail_refiner" ({} for the default network)'
            )
        refiner = self.components.detail_refiner
        if config.refiner_warp_weight > 0 and not (refiner is not None and refiner.config.warp):
            raise ValueError(
                'refiner_warp_weight needs a refiner that warps: model option "detail_refiner" '
                'with "warp": true'
            )
        missing = set(MODEL_SUBFOLDERS) - self.loaded_networks
        if config.refiner_sampled_probability > 0 and missing:
            raise ValueError(
                "refiner_sampled_probability needs a trained model to sample from: init_from "
                f"gave no {', '.join(sorted(missing))}"
            )
        #: Stage 0's and 3's patch discriminator (``vae_adversarial_weight`` > 0).
        self.vae_discriminator: PatchDiscriminator | None = None
        if config.stage in (0, 3) and config.vae_adversarial_weight > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + 2)
                self.vae_discriminator = PatchDiscriminator(3)
        self._move_to_device()
        for module in self._networks().values():
            guard_group_norm_backward(module)
        self.trainable = self._select_trainable()
        #: ``(parameter, trained-rows mask, fixed rows' values)`` of a widened encoder's output.
        self.fixed_rows: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        new_rows = self._new_latent_rows()
        if new_rows is not None:
            conv_out = self.components.vae.encoder.conv_out
            for param in (conv_out.weight, conv_out.bias):
                rows = new_rows.to(param.device)
                self.fixed_rows.append((param, rows, param.detach()[~rows].clone()))
        if config.gradient_checkpointing:
            for module in self._networks().values():
                if getattr(module, "_supports_gradient_checkpointing", False):
                    module.enable_gradient_checkpointing()
        # 3. Optimisers, schedule, EMA.
        params = [p for _, p in self.trainable]
        self.optimizer = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            betas=config.adam_betas,
            weight_decay=config.weight_decay,
        )
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / max(1, config.warmup_steps))
        )
        self.d_optimizer: torch.optim.Optimizer | None = None
        if self.use_gan:
            assert self.discriminator is not None
            gan = config.gan_config
            self.d_optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=gan.learning_rate, betas=(0.0, 0.99)
            )
        elif self.vae_discriminator is not None:
            self.d_optimizer = torch.optim.Adam(
                self.vae_discriminator.parameters(),
                lr=config.vae_discriminator_learning_rate,
                betas=(0.5, 0.9),
            )
        self.ema: dict[str, torch.Tensor] | None = None
        if config.ema_decay > 0:
            self.ema = {name: p.detach().clone().float() for name, p in self.trainable}
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=config.mixed_precision == "fp16" and self.device.type == "cuda"
        )
        self.step = 0
        self.log_path = self.output_dir / "train_log.jsonl"

    # ---------------------------------------------------------------- set-up

    def _networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {
            "reference_unet": self.components.reference_unet,
            "denoising_unet": self.components.denoising_unet,
            "motion_encoder": self.components.motion_encoder,
            "vae": self.components.vae,
            "image_encoder": self.components.image_encoder,
        }
        if self.components.detail_refiner is not None:
            nets["detail_refiner"] = self.components.detail_refiner
        if self.gan_decoder is not None and self.discriminator is not None:
            nets["gan_decoder"] = self.gan_decoder
            nets["discriminator"] = self.discriminator
        if self.vae_discriminator is not None:
            nets["vae_discriminator"] = self.vae_discriminator
        return nets

    def _move_to_device(self) -> None:
        for module in self._networks().values():
            nn.Module.to(module, self.device)

    def _load_initial_weights(self, source: Path, names: list[str] | None) -> None:
        from .export import load_model_folder_weights, resolve_model_folder

        try:
            self.loaded_networks.update(
                load_model_folder_weights(
                    source, self.components, names, widen_latent=self.config.init_widen_latent
                )
            )
        except (OSError, RuntimeError, ValueError) as exc:
            # Missing folders or weights, and networks of another architecture (strict load).
            raise InitialWeightsError(f"cannot start from {source}: {exc}") from exc
        info_path = resolve_model_folder(source) / "training.json"
        if info_path.is_file():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InitialWeightsError(f"{info_path}: unreadable ({exc})") from exc
            stages = info.get("stages", []) if isinstance(info, dict) else None
            if isinstance(stages, dict):  # the first preview model's hand-written form
                stages = [{"name": name, **run} for name, run in stages.items()]
            if not isinstance(stages, list) or not all(isinstance(r, dict) for r in stages):
                raise InitialWeightsError(f"{info_path}: 'stages' must be a list of runs")
            known = {run.get("name") for run in self.lineage}
            self.lineage += [run for run in stages if run.get("name") not in known]

    def _select_trainable(self) -> list[tuple[str, nn.Parameter]]:
        """Freeze everything, then enable exactly the parameters of this stage."""
        stage = self.config.stage
        for module in self._networks().values():
            module.requires_grad_(False)
        trainable: list[tuple[str, nn.Parameter]] = []

        def take(prefix: str, module: nn.Module, keep: Any = None) -> None:
            for name, param in module.named_parameters():
                if keep is None or keep(name):
                    param.requires_grad_(True)
                    trainable.append((f"{prefix}.{name}", param))

        comps = self.components
        if stage == 0:
            frozen_temporal = self.model_config.vae.get("type") == "tiny"
            encoder = self.config.vae_train_encoder
            new_rows = self.config.vae_encoder_train_channels_from is not None

            def vae_part(name: str) -> bool:
                if frozen_temporal and is_vae_temporal_parameter(name):
                    return False
                if new_rows and name.startswith("encoder.conv_out."):
                    return True
                return encoder or name.startswith("decoder.")

            take("vae", comps.vae, vae_part)
        elif stage == 3:
            assert comps.detail_refiner is not None
            take("detail_refiner", comps.detail_refiner)
        elif stage == 1:
            take("reference_unet", comps.reference_unet)
            take("denoising_unet", comps.denoising_unet, lambda n: not is_temporal_parameter(n))
            take("motion_encoder", comps.motion_encoder)
            if self.gan_decoder is not None:
                take("gan_decoder", self.gan_decoder)
        else:
            take("denoising_unet", comps.denoising_unet, is_temporal_parameter)
        for critic in (self.discriminator, self.vae_discriminator):
            if critic is not None:
                critic.requires_grad_(True)
        if not trainable:
            raise ValueError(f"stage {stage} has no trainable parameters in this model")
        return trainable

    def _new_latent_rows(self) -> torch.Tensor | None:
        """``vae_encoder_train_channels_from``: a mask over the encoder's output rows
        ``[mean (C), log-variance (C)]``, true for the rows that train."""
        start = self.config.vae_encoder_train_channels_from
        if start is None:
            return None
        channels = int(self.components.vae.config.latent_channels)
        if start >= channels:
            raise ValueError(
                f"vae_encoder_train_channels_from {start}: the VAE has only {channels} latent "
                "channels"
            )
        rows = torch.zeros(2 * channels, dtype=torch.bool)
        rows[start:channels] = True
        rows[channels + start :] = True
        return rows

    def _hold_fixed_latent_rows(self) -> None:
        """Give the fixed rows of ``vae_encoder_train_channels_from`` back their values after an
        optimiser step (their gradients are zeroed first, so only weight decay moved them)."""
        for param, rows, values in self.fixed_rows:
            with torch.no_grad():
                param[~rows] = values

    def _train_modes(self) -> None:
        stage = self.config.stage
        comps = self.components
        comps.image_encoder.eval()
        comps.vae.train(stage == 0)
        comps.reference_unet.train(stage == 1)
        comps.denoising_unet.train(stage in (1, 2))
        comps.motion_encoder.train(stage == 1)
        if comps.detail_refiner is not None:
            comps.detail_refiner.train(stage == 3)
        for module in (self.gan_decoder, self.discriminator, self.vae_discriminator):
            if module is not None:
                module.train()

    def _autocast(self) -> Any:
        if self.config.mixed_precision == "no":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.mixed_precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ---------------------------------------------------------------- checkpoints

    def checkpoint_dirs(self) -> list[Path]:
        if not self.output_dir.is_dir():
            return []
        found = []
        for path in self.output_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            suffix = path.name.removeprefix(CHECKPOINT_PREFIX)
            if suffix.isdigit() and (path / STATE_FILE).is_file():
                found.append(path)
        return sorted(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "snapshot_id": self.manifest.snapshot_id,
            "networks": {name: m.state_dict() for name, m in self._networks().items()},
            "optimizer": self.optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict() if self.d_optimizer else None,
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema,
            "rng": _rng_state(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-<step>/state.pt`` atomically (main process) and prune old ones."""
        if not self.dist.is_main:
            self._barrier()
            return None
        folder = self.output_dir / f"{CHECKPOINT_PREFIX}{self.step}"
        folder.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(self.state_dict(), folder / STATE_FILE)
        for old in self.checkpoint_dirs()[: -max(1, self.config.keep_checkpoints)]:
            (old / STATE_FILE).unlink(missing_ok=True)
            try:
                old.rmdir()
            except OSError:
                pass
        self._barrier()
        return folder

    def load_checkpoint(self, folder: str | os.PathLike[str] | None = None) -> int:
        """Restore the newest (or the given) checkpoint; returns its step (0 when none)."""
        if folder is None:
            found = self.checkpoint_dirs()
            if not found:
                return 0
            folder = found[-1]
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
        if state["snapshot_id"] != self.manifest.snapshot_id:
            raise ValueError(
                f"checkpoint was trained on snapshot {state['snapshot_id']!r}, not "
                f"{self.manifest.snapshot_id!r}"
            )
        for name, module in self._networks().items():
            module.load_state_dict(state["networks"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.d_optimizer is not None and state["d_optimizer"] is not None:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if state["ema"] is not None:
            self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        return self.step

    def _barrier(self) -> None:
        if self.dist.enabled:
            dist.barrier()

    # ---------------------------------------------------------------- one step

    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        keys = self.sampler.keys(step)
        batch = collate([self.dataset[key] for key in keys])
        return {k: v.to(self.device) for k, v in batch.items()}

    def _batches(self, start: int, stop: int) -> Iterator[dict[str, torch.Tensor]]:
        if self.config.num_workers <= 0:
            for step in range(start, stop):
                yield self._batch(step)
            return
        loader = torch.utils.data.DataLoader(
            self.dataset,  # type: ignore[arg-type]
            batch_sampler=[self.sampler.keys(step) for step in range(start, stop)],
            collate_fn=collate,
            num_workers=self.config.num_workers,
            persistent_workers=False,
        )
        for batch in loader:
            yield {k: v.to(self.device) for k, v in batch.items()}

    def _motion(self, images: torch.Tensor) -> torch.Tensor:
        """Motion input for ``(N, 3, S, S)`` crops (box parameters ``(0, 0, 1)``)."""
        size = self.model_config.motion_input_size
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        bbox = images.new_tensor([0.0, 0.0, 1.0]).expand(images.shape[0], 3)
        return self.components.motion_encoder(images, bbox)

    def _stage0_step(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        """The autoencoder's loss; also returns the reconstructions when a discriminator
        should see them this step (``vae_adversarial_weight``)."""
        vae = self.components.vae
        frames = batch["target"]  # (B, 3, F, S, S)
        num_frames = frames.shape[2]
        # b c f h w -> (b f) c h w
        images = frames.transpose(1, 2).flatten(0, 1)
        with self._autocast():
            posterior = vae.encode(images).latent_dist
            latents = posterior.mean
            if self.config.vae_latent_noise > 0:
                noise = torch.randn(posterior.mean.shape, generator=generator).to(self.device)
                latents = latents + self.config.vae_latent_noise * posterior.std * noise
            recon = vae.decode(latents, num_frames=num_frames).sample
        kl = kl_loss(posterior.mean, posterior.logvar)
        return self._image_loss(
            recon,
            images,
            last=vae.decoder.conv_out.weight,
            extra=self.config.vae_kl_weight * kl,
            logs={"kl": kl.item()},
        )

    def _refiner_step(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        """Stage 3: the detail refiner is trained to restore the targets from the frozen
        autoencoder's (perturbed, ``refiner_latent_noise``) round trips or the model's own
        generations (``refiner_sampled_probability``), given a reference frame; with
        ``refiner_warp_weight``, the warped portrait alone is held to the target too."""
        vae, refiner = self.components.vae, self.components.detail_refiner
        assert refiner is not None
        frames = batch["target"]  # (B, 3, F, S, S)
        num_frames = frames.shape[2]
        # b c f h w -> (b f) c h w
        images = frames.transpose(1, 2).flatten(0, 1)
        # b c h w -> (b f) c h w: each frame with its clip's reference
        reference = batch["reference"].repeat_interleave(num_frames, dim=0)
        draw = float(torch.rand((), generator=generator))
        sampled = draw < self.config.refiner_sampled_probability
        if sampled:
            decoded = self._sampled_frames(batch, generator)
        else:
            with torch.no_grad(), self._autocast():
                latents = vae.encode(images).latent_dist.mean
                noise_scale = self.config.refiner_latent_noise
                if noise_scale > 0:
                    share = noise_scale * torch.rand(latents.shape[0], 1, 1, 1, generator=generator)
                    noise = torch.randn(latents.shape, generator=generator)
                    latents = latents + (share * noise).to(latents) * latents.std()
                decoded = vae.decode(latents, num_frames=num_frames).sample.clamp(-1, 1)
        with self._autocast():
            parts = refiner(decoded, reference, return_parts=True)
        logs = {
            "rec_input": reconstruction_loss(decoded.float(), images).item(),
            "sampled": float(sampled),
        }
        extra = None
        weight = self.config.refiner_warp_weight
        if weight > 0:
            assert parts.warped is not None and parts.mask is not None
            warp_loss, warp_rec, _ = self._rec_perc_loss(parts.warped, images)
            extra = weight * warp_loss
            logs.update(warp_rec=warp_rec.item(), mask=parts.mask.mean().item())
        return self._image_loss(
            parts.sample, images, last=refiner.conv_out.weight, extra=extra, logs=logs
        )

    def _sampled_frames(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> torch.Tensor:
        """``refiner_sampled_probability``: the loaded model's unrefined, uncorrected frames of
        the batch (its references driven by its driving frames), ``(B F, 3, S, S)``."""
        from .sampling import SAMPLER_SETTINGS, reenact

        settings = {
            key: value
            for key, value in self.config.generation_defaults.items()
            if key in SAMPLER_SETTINGS and key not in ("color_match", "refine_details")
        }
        seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        try:
            clips = reenact(
                self.components,
                batch["reference"],
                batch["driving"],
                seed=seed,
                color_match="none",
                refine_details=False,
                **settings,
            )
        finally:
            self._train_modes()  # the sampler switched every network to eval
        # b c f h w -> (b f) c h w
        return clips.transpose(1, 2).flatten(0, 1)

    def _rec_perc_loss(
        self, fake: torch.Tensor, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """L1 + ``vae_perceptual_weight`` x perceptual between ``(N, 3, S, S)`` images: the
        weighted sum, then the two terms."""
        rec = reconstruction_loss(fake, real)
        perc = self.perceptual(fake, real)
        return rec + self.config.vae_perceptual_weight * perc, rec, perc

    def _image_loss(
        self,
        fake: torch.Tensor,
        real: torch.Tensor,
        *,
        last: torch.Tensor,
        extra: torch.Tensor | None = None,
        logs: dict[str, float] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        """L1 + perceptual (+ ``extra``) between ``(N, 3, S, S)`` images, plus the patch
        discriminator's adaptively weighted hinge term when it is active; also returns ``fake``
        then, for the discriminator's own step. ``last`` is the trained network's last layer."""
        image_loss, rec, perc = self._rec_perc_loss(fake, real)
        logs = {"rec": rec.item(), "perc": perc.item(), **(logs or {})}
        loss = image_loss if extra is None else image_loss + extra
        if not self._vae_adversarial_active():
            return loss, logs, None
        assert self.vae_discriminator is not None
        self.vae_discriminator.requires_grad_(False)
        with self._autocast():
            fake_logits, _ = self.vae_discriminator(fake)
        self.vae_discriminator.requires_grad_(True)
        adv = hinge_generator_loss([fake_logits])
        # VQGAN's adaptive weight: the adversarial gradient at the last layer is scaled to the
        # size of the reconstruction gradient there (detached: a weight, not a loss).
        rec_grad = torch.autograd.grad(image_loss, last, retain_graph=True)[0]
        adv_grad = torch.autograd.grad(adv, last, retain_graph=True)[0]
        scale = (rec_grad.norm() / (adv_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()
        weight = self.config.vae_adversarial_weight * scale
        logs.update(adv=adv.item(), adv_weight=float(weight))
        return loss + weight * adv, logs, fake

    def _vae_adversarial_active(self) -> bool:
        return self.vae_discriminator is not None and self.step >= self.config.vae_adversarial_start

    def _vae_discriminator_step(self, real: torch.Tensor, fake: torch.Tensor) -> float:
        """One hinge step of stage 0's patch discriminator on ``(N, 3, S, S)`` images."""
        assert self.vae_discriminator is not None and self.d_optimizer is not None
        with self._autocast():
            real_logits, _ = self.vae_discriminator(real)
            fake_logits, _ = self.vae_discriminator(fake.detach())
        loss = hinge_discriminator_loss([real_logits], [fake_logits])
        return self._critic_update(self.vae_discriminator, loss)

    def _critic_update(self, critic: nn.Module, loss: torch.Tensor) -> float:
        """One optimiser step of a discriminator (stage 0's or stage 1's) on its loss."""
        assert self.d_optimizer is not None
        self.d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._all_reduce(list(critic.parameters()))
        self.d_optimizer.step()
        return loss.item()

    def _diffusion_inputs(
        self,
        batch: dict[str, torch.Tensor],
        generator: torch.Generator,
        *,
        reference_start: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Noised target latents and the epsilon the denoiser is trained to predict.

        With ``reference_start`` (stage 1, conditional steps, see
        ``TrainingConfig.reference_start_probability``) some samples start from the reference's
        latent instead; their epsilon target maps that input to the target's latent.
        """
        comps = self.components
        reference, target = batch["reference"], batch["target"]
        batch_size, _, num_frames = target.shape[:3]
        with torch.no_grad():
            clip = encode_clip(comps.image_encoder, reference)
            ref_latent = vae_encode(comps.vae, reference)
            # b c f h w -> (b f) c h w -> encode -> b c f h w
            flat = vae_encode(comps.vae, target.transpose(1, 2).flatten(0, 1))
            latents = flat.reshape(batch_size, num_frames, *flat.shape[1:]).transpose(1, 2)
        timesteps = torch.randint(
            *self.config.train_timesteps, (batch_size,), generator=generator
        ).to(self.device)
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        chosen = torch.zeros(batch_size, dtype=torch.bool, device=self.device)
        start, epsilon = latents, noise
        if reference_start and self.config.reference_start_probability > 0:
            low, high = self.config.reference_start_timesteps
            draw = torch.rand((batch_size,), generator=generator)
            chosen = (draw < self.config.reference_start_probability).to(self.device)
            start_t = torch.randint(low, high, (batch_size,), generator=generator)
            timesteps = torch.where(chosen, start_t.to(self.device), timesteps)
            select = chosen.view(batch_size, 1, 1, 1, 1)  # b -> b 1 1 1 1
            # b c h w -> b c f h w: the portrait's latent for every frame, as the pipeline starts
            start = torch.where(select, ref_latent.unsqueeze(2).expand_as(latents), latents)
        noisy = comps.noise_scheduler.add_noise(start, noise, timesteps)
        if bool(chosen.any()):
            # The epsilon for which noisy = sqrt(abar) * target + sqrt(1 - abar) * epsilon: the
            # denoiser's x0 estimate from a reference start is then the target.
            abar = comps.noise_scheduler.alphas_cumprod.to(self.device)[timesteps]
            abar = abar.view(batch_size, 1, 1, 1, 1)  # b -> b 1 1 1 1
            towards_target = (noisy - abar.sqrt() * latents) / (1 - abar).sqrt()
            epsilon = torch.where(select, towards_target.to(noise.dtype), noise)
        return {
            "clip": clip,
            "ref_latent": ref_latent,
            "noisy": noisy,
            "epsilon": epsilon,
            "timesteps": timesteps,
            "from_reference": chosen,
        }

    def _diffusion_loss(
        self, pred: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        cap = self.config.x0_weight_cap
        if cap <= 0:
            return diffusion_loss(pred, noise)
        alphas = self.components.noise_scheduler.alphas_cumprod.to(pred.device)
        weights = ((1 - alphas) / alphas).clamp(1.0, cap)  # (T,) per timestep
        low, high = self.config.train_timesteps
        # mean over b of w_b * mse_b, normalised so that E_t[w] = 1 over the trained timesteps
        per_sample = (pred.float() - noise.float()).pow(2).flatten(1).mean(dim=1)
        return (weights[timesteps] * per_sample).mean() / weights[low:high].mean()

    def _denoise(
        self,
        inputs: dict[str, torch.Tensor],
        motion: torch.Tensor,
        uncond: bool,
        generator: torch.Generator,
        train_reference: bool,
    ) -> torch.Tensor:
        comps = self.components
        clip = inputs["clip"]
        if uncond:
            clip = torch.zeros_like(clip)
            clear_reference_banks(comps.denoising_unet)
        else:
            grad = torch.enable_grad() if train_reference else torch.no_grad()
            with grad:
                banks = run_reference_pass(comps.reference_unet, inputs["ref_latent"], clip, 0)
            ratio = self.config.reference_mask_ratio if self.config.stage == 1 else 0.0
            banks = mask_reference_banks(banks, ratio, generator)
            load_reference_banks(comps.denoising_unet, banks, do_classifier_free_guidance=False)
        # The banks stay loaded until the backward pass is over (cleared in _run_step): with
        # gradient checkpointing the blocks are re-run in backward and must see them again.
        return comps.denoising_unet(
            inputs["noisy"], inputs["timesteps"], clip, motion, return_dict=False
        )[0]

    def _stage12_step(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
        cfg = self.config
        stage1 = cfg.stage == 1
        reference, target, driving = batch["reference"], batch["target"], batch["driving"]
        batch_size, _, num_frames = target.shape[:3]
        uncond = bool(torch.rand((), generator=generator) < cfg.uncond_probability)
        # An unconditional step has no driver to take the pose from: no reference starts.
        inputs = self._diffusion_inputs(batch, generator, reference_start=stage1 and not uncond)
        logs: dict[str, float] = {}
        fake = None
        with self._autocast():
            grad = nullcontext() if stage1 else torch.no_grad()
            with grad:
                # b c f h w -> (b f) c h w
                drive_motion = self._motion(driving.transpose(1, 2).flatten(0, 1))
                if uncond:
                    # The reference's own motion, for every frame (the CFG negative).
                    ref_motion = self._motion(reference)
                    motion = ref_motion.repeat_interleave(num_frames, dim=0)
                else:
                    motion = drive_motion
                # (b f) ... -> b f ...
                motion = motion.reshape(batch_size, num_frames, *motion.shape[1:])
            pred = self._denoise(inputs, motion, uncond, generator, train_reference=stage1)
            loss = self._diffusion_loss(pred, inputs["epsilon"], inputs["timesteps"])
            logs["diff"] = loss.item()
            if stage1 and cfg.reference_start_probability > 0:
                logs["ref_start"] = inputs["from_reference"].float().mean().item()
            if self.use_gan:
                assert self.gan_decoder is not None and self.discriminator is not None
                gan = cfg.gan_config
                real = target.transpose(1, 2).flatten(0, 1)
                ref_rep = reference.repeat_interleave(num_frames, dim=0)
                fake = self.gan_decoder(ref_rep, drive_motion)
                rec = reconstruction_loss(fake, real)
                perc = self.perceptual(fake, real)
                g_loss = gan.reconstruction_weight * rec + gan.perceptual_weight * perc
                logs.update(rec=rec.item(), perc=perc.item())
                if self.step >= gan.adversarial_start:
                    self.discriminator.requires_grad_(False)
                    fake_logits, fake_feats = self.discriminator(fake, ref_rep)
                    with torch.no_grad():
                        _, real_feats = self.discriminator(real, ref_rep)
                    self.discriminator.requires_grad_(True)
                    adv = hinge_generator_loss(fake_logits)
                    fm = feature_matching_loss(real_feats, fake_feats)
                    g_loss = g_loss + gan.adversarial_weight * adv
                    g_loss = g_loss + gan.feature_matching_weight * fm
                    logs.update(adv=adv.item(), fm=fm.item())
                loss = loss + gan.weight * g_loss
        logs["loss"] = loss.item()
        logs["uncond"] = float(uncond)
        return loss, logs, fake

    def _discriminator_step(self, batch: dict[str, torch.Tensor], fake: torch.Tensor) -> float:
        assert self.discriminator is not None and self.d_optimizer is not None
        reference, target = batch["reference"], batch["target"]
        num_frames = target.shape[2]
        real = target.transpose(1, 2).flatten(0, 1)
        ref_rep = reference.repeat_interleave(num_frames, dim=0)
        with self._autocast():
            real_logits, _ = self.discriminator(real, ref_rep)
            fake_logits, _ = self.discriminator(fake.detach(), ref_rep)
            # Mismatched pairs teach the pair head what "not this person" looks like.
            shuffled = ref_rep.roll(shifts=num_frames, dims=0)
            wrong_logits, _ = self.discriminator(real, shuffled)
        loss = hinge_discriminator_loss(real_logits, fake_logits)
        if reference.shape[0] > 1:
            loss = loss + F.relu(1.0 + wrong_logits[1].float()).mean()
        return self._critic_update(self.discriminator, loss)

    def _all_reduce(self, params: list[nn.Parameter] | list[torch.Tensor]) -> None:
        if not self.dist.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.dist.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def _update_ema(self) -> None:
        if self.ema is None:
            return
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for name, param in self.trainable:
                self.ema[name].mul_(decay).add_(param.detach().float(), alpha=1 - decay)

    def train_step(self) -> dict[str, float]:
        """Run optimisation step ``self.step`` and advance it."""
        return self._run_step(self._batch(self.step))

    def _run_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        seed = step_seed(cfg.seed, self.step, self.dist.rank)
        torch.manual_seed(seed)  # dropout and anything else drawing from the global RNG
        generator = torch.Generator().manual_seed(seed)
        self._train_modes()
        fake = None
        try:
            if cfg.stage == 0:
                loss, logs, fake = self._stage0_step(batch, generator)
            elif cfg.stage == 3:
                loss, logs, fake = self._refiner_step(batch, generator)
            else:
                loss, logs, fake = self._stage12_step(batch, generator)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        finally:
            clear_reference_banks(self.components.denoising_unet)
        params = [p for _, p in self.trainable]
        for param, rows, _ in self.fixed_rows:
            if param.grad is not None:
                param.grad[~rows] = 0.0
        self._all_reduce(params)
        if cfg.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            logs["grad_norm"] = float(norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._hold_fixed_latent_rows()
        self.lr_scheduler.step()
        if fake is not None and cfg.stage in (0, 3):
            # b c f h w -> (b f) c h w, as the reconstructions (or refined frames)
            real = batch["target"].transpose(1, 2).flatten(0, 1)
            logs["d_loss"] = self._vae_discriminator_step(real, fake)
        elif fake is not None and self.step >= cfg.gan_config.adversarial_start:
            logs["d_loss"] = self._discriminator_step(batch, fake)
        self._update_ema()
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        self.step += 1
        return logs

    # ---------------------------------------------------------------- the loop

    def train(self, *, resume: bool = False) -> Path | None:
        """Train to ``max_steps`` (resuming from the newest checkpoint if asked) and export.

        Returns:
            The exported model folder (main process), else ``None``.
        """
        cfg = self.config
        if resume:
            self.load_checkpoint()
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.json").write_text(
                json.dumps(
                    {**cfg.to_dict(), "snapshot_id": self.manifest.snapshot_id},
                    indent=2,
                    default=str,
                )
                + "\n"
            )
        progress = None
        if self.show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=cfg.max_steps, initial=self.step, desc=f"stage {cfg.stage}", unit="step"
            )
        started = time.perf_counter()
        start_step = self.step
        try:
            for batch in self._batches(self.step, cfg.max_steps):
                logs = self._run_step(batch)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k != "lr"})
                elapsed = time.perf_counter() - started
                # Checked every step (on the main process's clock) so the last step is logged.
                out_of_time = bool(cfg.max_minutes) and self._out_of_time(elapsed)
                if self.dist.is_main and (
                    self.step % cfg.log_every == 0 or self.step == cfg.max_steps or out_of_time
                ):
                    record = {"step": self.step, "elapsed_s": round(elapsed, 2), **logs}
                    with self.log_path.open("a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save_checkpoint()
                if out_of_time:
                    break
        finally:
            if progress is not None:
                progress.close()
        if self.step > start_step:
            self.save_checkpoint()
        return self.export()

    def _out_of_time(self, elapsed_s: float) -> bool:
        late = elapsed_s >= self.config.max_minutes * 60
        if not self.dist.enabled:
            return late
        # The main process's clock decides for every rank: ranks stopping at different steps
        # would leave the others waiting forever in the next all-reduce.
        stop = torch.tensor([float(late)], device=self.device)
        dist.broadcast(stop, src=0)
        return bool(stop.item())

    # ---------------------------------------------------------------- export

    def _apply_ema(self) -> dict[str, torch.Tensor] | None:
        if self.ema is None:
            return None
        backup = {name: p.detach().clone() for name, p in self.trainable}
        with torch.no_grad():
            for name, param in self.trainable:
                param.copy_(self.ema[name].to(param.dtype))
        return backup

    def _restore(self, backup: dict[str, torch.Tensor] | None) -> None:
        if backup is None:
            return
        with torch.no_grad():
            for name, param in self.trainable:
                param.copy_(backup[name])

    @torch.no_grad()
    def calibrate_vae(self, batches: int = 8, channels_from: int = 0) -> torch.Tensor:
        """Rescale the tiny VAE's latent channels (stage 0), exactly.

        With the per-channel std ``s`` of the posterior means over a few batches, the encoder is
        made to output ``z / (s * 0.18215)`` (``quant_conv`` mean rows rescaled, log variance
        shifted) and ``decoder.conv_in`` absorbs the inverse factor, so reconstructions are
        unchanged (up to float rounding) while ``0.18215 * latent`` gets unit variance per
        channel. The mean is not shifted: with the zero padding of ``conv_in`` a shift would not
        be exactly invertible at the borders. Channels below ``channels_from`` keep their scale
        (``vae_encoder_train_channels_from``: networks were trained on them).

        Returns:
            The ``(mean, std)`` of ``0.18215 * latent`` measured before calibration, ``(2, C)``.
        """
        vae = self.components.vae
        vae.eval()
        samples = []
        for k in range(batches):
            batch = self._batch(k)
            images = batch["target"].transpose(1, 2).flatten(0, 1)
            samples.append(vae.encode(images).latent_dist.mean)
        latents = torch.cat(samples)  # (N, C, h, w), unscaled
        mean = latents.mean(dim=(0, 2, 3))
        std = latents.std(dim=(0, 2, 3)).clamp_min(1e-6)
        gain = 1.0 / (std * LATENT_SCALE)  # z' = gain * z
        # Channels other networks were trained on keep their scale (widened latents).
        gain[:channels_from] = 1.0
        channels = mean.numel()
        quant = vae.quant_conv
        quant.weight[:channels] *= gain[:, None, None, None]
        quant.bias[:channels] *= gain
        quant.bias[channels:] += 2.0 * torch.log(gain)
        # conv_in(z) = W z + b = (W / gain) z' + b.
        vae.decoder.conv_in.weight /= gain[None, :, None, None]
        return torch.stack([mean * LATENT_SCALE, std * LATENT_SCALE])

    def exported_networks(self) -> tuple[str, ...]:
        """The networks this run's export holds: those whose weights mean something together.

        Stages 1 and 2 export everything: a network they did not train (a VAE, the frozen image
        encoder) is what the trained ones learned against. Stage 0 trains only the autoencoder,
        so the other networks are exported only when they came from an earlier run *and* the
        latent space they were trained on is unchanged (``vae_train_encoder`` false; with it,
        the export also recalibrates the latent channels): freshly built UNets would make the
        folder look like a model that animates noise, and a denoiser trained on the old
        encoder's latents does not fit a retrained encoder. Its export never holds a detail
        refiner: one learnt on the old decoder's frames.

        Stage 3 trains only the refiner and changes nothing else, so it exports the refiner,
        the autoencoder it learnt on and whatever came from earlier runs (from a complete model,
        a complete model with a refiner).
        """
        stage = self.config.stage
        if stage in (1, 2):
            return present_networks(self.components)
        if stage == 3:
            return tuple(
                name
                for name in present_networks(self.components)
                if name in ("vae", DETAIL_REFINER) or name in self.loaded_networks
            )
        latent_space_kept = not self.config.vae_train_encoder
        return tuple(
            name
            for name in MODEL_SUBFOLDERS
            if name == "vae" or (latent_space_kept and name in self.loaded_networks)
        )

    def export(self) -> Path | None:
        """Write ``model/`` (folder layout) and ``official/`` (the release files of the networks
        it holds) on the main process; see :meth:`exported_networks`."""
        if not self.dist.is_main:
            self._barrier()
            return None
        backup = self._apply_ema()
        try:
            info: dict[str, Any] = {
                "stage": self.config.stage,
                "steps": self.step,
                "snapshot_id": self.manifest.snapshot_id,
                "exported_at_snapshot": self.manifest.exported_at,
                "licence_ids": list(self.manifest.licence_ids),
                "model_config": self.model_config.to_dict(),
                "training_config": self.config.to_dict(),
                "ema": self.ema is not None,
                "world_size": self.dist.world_size,
                "stages": [
                    *self.lineage,
                    {
                        "name": self.output_dir.name,
                        "stage": self.config.stage,
                        "steps": self.step,
                        "wall_clock_min": round(logged_wall_clock_s(self.log_path) / 60, 1),
                        "world_size": self.dist.world_size,
                        "device": device_description(self.device),
                        "init_from": self.config.init_from,
                        "init_overrides": dict(self.config.init_overrides),
                        # max_steps 0: this run only assembled (init_from + init_overrides)
                        # and exported earlier runs' networks; say so rather than claim training.
                        **({"export_only": True} if self.step == 0 else {}),
                    },
                ],
            }
            new_channels = self.config.vae_encoder_train_channels_from
            if self.config.stage == 0 and (self.config.vae_train_encoder or new_channels):
                stats = self.calibrate_vae(channels_from=new_channels or 0)
                info["vae_latent_stats_before_calibration"] = stats.tolist()
            dtype = torch.float16 if self.config.export_dtype == "float16" else None
            networks = self.exported_networks()
            folder = save_model_folder(
                self.output_dir / "model",
                self.components,
                dtype=dtype,
                training_info=info,
                generation_defaults={
                    "resolution": self.model_config.resolution,
                    **self.config.generation_defaults,
                },
                networks=networks,
            )
            official = self.output_dir / "official"
            if official.is_dir():
                # A re-export (e.g. --resume) must not leave an earlier export's files beside
                # fewer new ones.
                shutil.rmtree(official)
            export_official_checkpoints(
                official, self.components, formats=self.config.export_formats, networks=networks
            )
        finally:
            self._restore(backup)
        self._barrier()
        return folder


def device_description(device: torch.device) -> str:
    """What trained a run, for its lineage record (the model card's hardware line)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def logged_wall_clock_s(log_path: Path) -> float:
    """Training seconds recorded in ``train_log.jsonl``, summed over resumed runs.

    Each process logs ``elapsed_s`` from its own start, so a drop marks a resumption: the
    segment before it ended at its last record.
    """
    if not log_path.is_file():
        return 0.0
    total = last = 0.0
    for line in log_path.read_text(encoding="utf-8").splitlines():
        try:
            elapsed = float(json.loads(line)["elapsed_s"])
        except (ValueError, KeyError, TypeError):
            continue
        if elapsed < last:
            total += last
        last = elapsed
    return total + last


def train(
    config: TrainingConfig,
    manifest_path: str | os.PathLike[str],
    *,
    resume: bool = False,
    status_checker: SnapshotStatusChecker | None = None,
) -> Path | None:
    """Build a :class:`Trainer` and run it; returns the exported model folder."""
    trainer = Trainer(config, manifest_path, status_checker=status_checker)
    try:
        return trainer.train(resume=resume)
    finally:
        if trainer.dist.enabled and dist.is_initialized():
            dist.destroy_process_group()


__all__ = [
    "GanConfig",
    "InitialWeightsError",
    "Trainer",
    "TrainingConfig",
    "guard_group_norm_backward",
    "init_distributed",
    "mask_reference_banks",
    "step_seed",
    "train",
]
