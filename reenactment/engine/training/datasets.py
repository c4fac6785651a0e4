"""Training samples from a snapshot manifest: self-reenactment pairs drawn from single clips.

One sample = one clip of the manifest: a *reference* frame and a window of ``F`` consecutive
frames which are both the *targets* (what the denoiser must produce) and, after augmentation,
the *driving* frames (what the motion encoder sees). Reference and targets share the identity, so
the model must take appearance from the reference and only motion from the driving frames; the
augmentations (:mod:`.augmentations`) remove what identity cues they can from the driving side.

Cross-identity pairs (synthetic data only): a clip whose manifest line names a
``driving_clip_id`` shows identity A performing exactly the motion of that clip of identity B
(SynthFace renders both). With ``cross_identity_probability`` > 0 such a clip is, with that
probability, driven by the *same window of B's clip* instead of its own frames: the targets stay
A's, so the only thing the driving frames can usefully contribute is motion. Real footage has no
such pairs; there the augmentations are all there is.

References from other clips: within one short clip the head barely moves, so a reference frame
from the same clip is nearly the target and copying it is almost optimal - a model trained that
way learns to ignore the motion. With ``reference_other_clip_probability`` > 0 the reference
comes, with that probability, from another clip of the same person(s) (another recording, or for
SynthFace another motion track), so reference and target differ in pose and expression as they
do when a portrait is animated.

Determinism: every sample is a pure function of ``(clip index, sample seed)``; the trainer derives
the keys of each step from ``(seed, step, rank)`` with :class:`StepSampler` (a
:class:`torch.utils.data.DistributedSampler` permutation per epoch), so a resumed run sees exactly
the samples an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler

from .augmentations import AugmentationConfig, DrivingAugmentation
from .manifest import ManifestClip, SnapshotManifest, read_verified_clip

SampleKey = tuple[int, int]
"""``(clip index, sample seed)``."""


@dataclass(frozen=True)
class SampleConfig:
    """How samples are cut from clips.

    Args:
        size: Output frame size (frames are resized when the clip differs).
        frames: Frames per sample (the driving/target window).
        frame_stride: Step between window frames.
        augment: Augment the driving frames.
        augmentation: Augmentation probabilities and strengths.
        cache_clips: Decoded (verified) clips kept in memory.
        cross_identity_probability: Chance that a clip with a ``driving_clip_id`` is driven by
            that clip (another identity, same motion) rather than by its own frames.
        reference_other_clip_probability: Chance that the reference frame comes from another
            clip of the same person(s) (when the manifest has one) rather than from the clip
            itself.
    """

    size: int = 64
    frames: int = 2
    frame_stride: int = 1
    augment: bool = True
    augmentation: AugmentationConfig = AugmentationConfig()
    cache_clips: int = 4096
    cross_identity_probability: float = 0.0
    reference_other_clip_probability: float = 0.0

    def __post_init__(self) -> None:
        for name in ("cross_identity_probability", "reference_other_clip_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")


def _to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(T, 3, size, size)`` float in ``[-1, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x


class ClipDataset(Dataset[dict[str, torch.Tensor]]):
    """Map-style dataset over the clips of a :class:`SnapshotManifest`.

    ``dataset[(clip_index, seed)]`` returns a dict of tensors:

    * ``reference`` ``(3, S, S)``; ``target`` ``(3, F, S, S)``; ``driving`` ``(3, F, S, S)``
      (augmented targets), all in ``[-1, 1]``;
    * ``frame_indices`` ``(F,)``, ``reference_index`` ``()``, ``clip_index`` ``()`` and
      ``driving_clip_index`` ``()`` and ``reference_clip_index`` ``()`` (int64; equal to
      ``clip_index`` unless the sample is a cross-identity pair / has a reference from another
      clip).

    Every clip is checked against its SHA-256 the first time it is read.

    Args:
        manifest: The snapshot.
        config: Sample geometry and augmentation.
    """

    def __init__(self, manifest: SnapshotManifest, config: SampleConfig | None = None) -> None:
        self.manifest = manifest
        self.config = config or SampleConfig()
        self.augmentation = DrivingAugmentation(self.config.augmentation)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        span = (self.config.frames - 1) * self.config.frame_stride + 1
        short = [c.clip_id for c in manifest.clips if c.frames < span]
        if short:
            raise ValueError(f"clips shorter than the {span}-frame window: {short[:5]}")
        self.driving_pairs = self._driving_pairs() if self.config.cross_identity_probability else {}
        self.same_person_clips = (
            self._same_person_clips() if self.config.reference_other_clip_probability else {}
        )

    def _same_person_clips(self) -> dict[int, list[int]]:
        """``{clip index: the other clips showing exactly the same persons}`` (where any)."""
        by_persons: dict[tuple[str, ...], list[int]] = {}
        for i, clip in enumerate(self.manifest.clips):
            if clip.persons:
                by_persons.setdefault(tuple(sorted(clip.persons)), []).append(i)
        others = {
            i: [j for j in group if j != i]
            for group in by_persons.values()
            if len(group) > 1
            for i in group
        }
        if not others:
            raise ValueError(
                "reference_other_clip_probability > 0 needs persons with more than one clip"
            )
        return others

    def _driving_pairs(self) -> dict[int, int]:
        """``{clip index: index of its driving clip}`` for the clips that name one."""
        by_id = {clip.clip_id: i for i, clip in enumerate(self.manifest.clips)}
        pairs: dict[int, int] = {}
        for i, clip in enumerate(self.manifest.clips):
            driving_id = clip.extra.get("driving_clip_id")
            if driving_id is None:
                continue
            if driving_id not in by_id:
                raise ValueError(
                    f"clip {clip.clip_id!r} names driving clip {driving_id!r}, "
                    "which the manifest does not list"
                )
            driving = self.manifest.clips[by_id[driving_id]]
            if driving.frames != clip.frames:
                raise ValueError(
                    f"clip {clip.clip_id!r} has {clip.frames} frames, its driving clip "
                    f"{driving_id!r} {driving.frames}"
                )
            pairs[i] = by_id[driving_id]
        if not pairs:
            raise ValueError(
                "cross_identity_probability > 0 needs clips with a 'driving_clip_id' (convert "
                "SynthFace with --with-cross-pairs)"
            )
        return pairs

    def __len__(self) -> int:
        return len(self.manifest.clips)

    def clip(self, index: int) -> ManifestClip:
        return self.manifest.clips[index]

    def frames(self, index: int) -> np.ndarray:
        """Verified, decoded frames of clip ``index`` (cached)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        frames = read_verified_clip(self.manifest.clips[index])
        self._cache[index] = frames
        while len(self._cache) > self.config.cache_clips:
            self._cache.popitem(last=False)
        return frames

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        index, seed = key
        cfg = self.config
        clip = self.manifest.clips[index]
        frames = self.frames(index)
        rng = np.random.default_rng(seed)
        span = (cfg.frames - 1) * cfg.frame_stride + 1
        start = int(rng.integers(0, clip.frames - span + 1))
        window = np.arange(start, start + span, cfg.frame_stride)
        ref_index = int(rng.integers(0, clip.frames))
        target = _to_tensor(frames[window], cfg.size)  # (F, 3, S, S)
        reference = _to_tensor(frames[ref_index : ref_index + 1], cfg.size)[0]
        driving, source, source_frames = target, clip, frames
        # The options draw from ``rng`` only when on and only for clips they apply to, so every
        # other sample is exactly what it was without them.
        driving_index = index
        if index in self.driving_pairs and rng.uniform() < cfg.cross_identity_probability:
            driving_index = self.driving_pairs[index]
            source = self.manifest.clips[driving_index]
            source_frames = self.frames(driving_index)
            driving = _to_tensor(source_frames[window], cfg.size)  # (F, 3, S, S)
        reference_clip_index = index
        if index in self.same_person_clips and rng.uniform() < cfg.reference_other_clip_probability:
            candidates = self.same_person_clips[index]
            reference_clip_index = candidates[int(rng.integers(len(candidates)))]
            other = self.frames(reference_clip_index)
            ref_index = int(rng.integers(0, other.shape[0]))
            reference = _to_tensor(other[ref_index : ref_index + 1], cfg.size)[0]
        if cfg.augment:
            generator = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            boxes = None
            if source.face_boxes is not None:
                scale = cfg.size / source_frames.shape[2]
                boxes = torch.tensor([source.face_boxes[i] for i in window]) * scale
            driving = self.augmentation(driving, generator, boxes)
        return {
            "reference": reference,
            # f c h w -> c f h w
            "target": target.transpose(0, 1).contiguous(),
            "driving": driving.transpose(0, 1).contiguous(),
            "frame_indices": torch.from_numpy(window.astype(np.int64)),
            "reference_index": torch.tensor(ref_index),
            "clip_index": torch.tensor(index),
            "driving_clip_index": torch.tensor(driving_index),
            "reference_clip_index": torch.tensor(reference_clip_index),
        }


def collate(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of samples along a new batch dimension."""
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


class StepSampler:
    """Keys of the samples of each optimisation step, for one rank.

    Epoch ``e`` uses the permutation of :class:`~torch.utils.data.DistributedSampler` with
    ``set_epoch(e)`` (shuffled, ``drop_last``), so ranks see disjoint clips; step ``k`` takes the
    next ``batch_size`` clips of that order. The per-sample seed is derived from
    ``(seed, step, rank, position)``.

    Args:
        dataset_size: Clips in the dataset.
        batch_size: Samples per step and rank.
        seed: Run seed.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(
        self, dataset_size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.sampler = DistributedSampler(
            range(dataset_size),  # type: ignore[arg-type]  # only len() is used
            num_replicas=world_size,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.per_epoch = len(self.sampler)
        if self.per_epoch < batch_size:
            raise ValueError(
                f"{dataset_size} clips over {world_size} rank(s) cannot fill a batch of "
                f"{batch_size}"
            )
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self._epoch_cache: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self.sampler.set_epoch(epoch)
            self._epoch_cache = (epoch, list(iter(self.sampler)))
        return self._epoch_cache[1]

    def keys(self, step: int) -> list[SampleKey]:
        """The ``batch_size`` sample keys of ``step`` on this rank."""
        steps_per_epoch = self.per_epoch // self.batch_size
        epoch, within = divmod(step, steps_per_epoch)
        order = self._order(epoch)
        indices = order[within * self.batch_size : (within + 1) * self.batch_size]
        seeds = np.random.SeedSequence([self.seed, step, self.rank]).generate_state(
            len(indices), dtype=np.uint64
        )
        return [(int(i), int(s >> np.uint64(2))) for i, s in zip(indices, seeds, strict=True)]


__all__ = ["ClipDataset", "SampleConfig", "SampleKey", "StepSampler", "collate"]
