"""Any segmentation-models-pytorch network, built by smp's own ``create_model``.

This is the architecture that smp folders (``config.json`` + ``model.safetensors`` as written
by smp's ``save_pretrained``) import into: the init kwargs are the folder's ``config.json``
less the input channels, the classes and the output activation, which live in the spec.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slicewise._compat import ensure_torchvision_ops
from slicewise.models.adapters.base import Adapter
from slicewise.models.spec import ModelSpec


class SMPAdapter(Adapter):
    arch = "smp"
    family = "smp"
    kind = "SMA"
    description = "any segmentation-models-pytorch network (smp.create_model), ResNet-18 U-Net by default"
    default_kwargs = {
        "architecture": "Unet",
        "encoder_name": "resnet18",
        "encoder_depth": 3,
        "decoder_channels": [64, 32, 16],
    }

    def input_divisor(self, spec: ModelSpec) -> int:
        return 2 ** int(self.kwargs(spec).get("encoder_depth", 5))

    def cam_layer(self, spec: ModelSpec) -> str | None:
        """smp's U-Net starts its decoder at ``center`` on the encoder's deepest features."""
        return "decoder.center" if self.kwargs(spec)["architecture"].lower() == "unet" else None

    def create(self, in_channels: int, num_classes: int, *, architecture: str, **kwargs: Any) -> nn.Module:
        ensure_torchvision_ops()
        import segmentation_models_pytorch as smp

        return smp.create_model(
            architecture, encoder_weights=None, in_channels=in_channels, classes=num_classes, **kwargs
        )

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The mask logits; a network with a classification head (``aux_params``) also returns labels."""
        out = model(x)
        return out[0] if isinstance(out, tuple) else out
