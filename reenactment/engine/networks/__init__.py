"""The X-NeMo networks (clean-room implementation, state-dict compatible with the release).

* :class:`UNet2DReferenceModel` - reference ("appearance") UNet, writes reference banks.
* :class:`UNet3DDenoisingModel` - video denoiser with motion and temporal modules.
* :class:`MotionEncoder` - face crop + box parameters -> 32 motion tokens x 16.
* :class:`CompactMotionEncoder` - the same head and tokens on a small backbone (CPU-trained models).
* :class:`ReferenceDetailRefiner` - optional: corrects decoded frames with the portrait.
* :class:`ReferenceAttentionControl` and :func:`guided_noise_prediction` - the reference-attention
  hand-over and one classifier-free-guided noise prediction.
"""

from .attention import ReferenceMode
from .compact_motion_encoder import CompactMotionEncoder
from .detail_refiner import DetailRefinerOutput, ReferenceDetailRefiner
from .motion_encoder import MotionEncoder
from .reference_attention import (
    GuidedNoisePrediction,
    ReferenceAttentionControl,
    ReferenceBanks,
    cfg_clip_embeds,
    cfg_motion_tokens,
    clear_reference_banks,
    guided_noise_prediction,
    load_reference_banks,
    run_reference_pass,
)
from .unet_2d_reference import UNet2DReferenceModel, UNet2DReferenceOutput
from .unet_3d_denoising import UNet3DDenoisingModel, UNet3DDenoisingOutput

__all__ = [
    "CompactMotionEncoder",
    "DetailRefinerOutput",
    "GuidedNoisePrediction",
    "MotionEncoder",
    "ReferenceAttentionControl",
    "ReferenceBanks",
    "ReferenceDetailRefiner",
    "ReferenceMode",
    "UNet2DReferenceModel",
    "UNet2DReferenceOutput",
    "UNet3DDenoisingModel",
    "UNet3DDenoisingOutput",
    "cfg_clip_embeds",
    "cfg_motion_tokens",
    "clear_reference_banks",
    "guided_noise_prediction",
    "load_reference_banks",
    "run_reference_pass",
]
