"""End-to-end training of X-NeMo models from dataset-snapshot manifests.

* :mod:`.manifest` - snapshot manifests (the trainer's only data source), withdrawn-snapshot
  refusal, per-clip SHA-256 checks, SynthFace conversion.
* :mod:`.datasets` / :mod:`.augmentations` - self-reenactment samples and driving augmentations.
* :mod:`.components` - network configurations (official size, small CPU size with a compact
  motion encoder, tiny VAE and CLIP).
* :mod:`.losses` / :mod:`.gan_decoder` - diffusion loss and the dual GAN decoder.
* :mod:`.trainer` - stages 0/1/2, checkpoints, resumption, mixed precision, DDP.
* :mod:`.baseline` - the spatial-feature-map motion injection used as an ablation.
* :mod:`.export` / :mod:`.sampling` - four-file and model-folder export, a reference sampler.

Command line: ``python -m reenactment.engine.training --config run.json --manifest snap.jsonl``
(also under ``torchrun``).
"""

from .components import CompactMotionEncoder, Components, ModelConfig, build_components
from .export import (
    export_official_checkpoints,
    load_model_folder,
    load_model_folder_weights,
    save_model_folder,
)
from .manifest import (
    ClipIntegrityError,
    FileSnapshotStatusChecker,
    ManifestError,
    SnapshotManifest,
    SnapshotStatusChecker,
    SnapshotStatusUnknownError,
    SnapshotWithdrawnError,
    convert_synthface_manifest,
    read_manifest,
)
from .trainer import InitialWeightsError, Trainer, TrainingConfig, train

__all__ = [
    "ClipIntegrityError",
    "CompactMotionEncoder",
    "Components",
    "FileSnapshotStatusChecker",
    "InitialWeightsError",
    "ManifestError",
    "ModelConfig",
    "SnapshotManifest",
    "SnapshotStatusChecker",
    "SnapshotStatusUnknownError",
    "SnapshotWithdrawnError",
    "Trainer",
    "TrainingConfig",
    "build_components",
    "convert_synthface_manifest",
    "export_official_checkpoints",
    "load_model_folder",
    "load_model_folder_weights",
    "read_manifest",
    "save_model_folder",
    "train",
]
