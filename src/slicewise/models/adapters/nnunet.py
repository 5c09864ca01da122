"""nnU-Net v2's 2D U-Nets, built by ``dynamic_network_architectures`` from a plans file's kwargs.

The init kwargs are the ``arch_kwargs`` of an nnU-Net v2 plans configuration, with the class
names of its operators (``"torch.nn.modules.conv.Conv2d"``) kept as strings. They are resolved
through an explicit table of torch layers, never imported by name, so a plans file cannot make
slicewise import arbitrary code.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from slicewise.errors import CheckpointError
from slicewise.models.adapters.base import Adapter
from slicewise.models.spec import ModelSpec

NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet")
_OPERATORS: dict[str, type[nn.Module]] = {
    op.__name__: op
    for op in (
        nn.Conv2d,
        nn.InstanceNorm2d,
        nn.BatchNorm2d,
        nn.GroupNorm,
        nn.Dropout,
        nn.Dropout2d,
        nn.LeakyReLU,
        nn.ReLU,
        nn.GELU,
        nn.PReLU,
        nn.ELU,
    )
}
OPERATOR_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")


def resolve_operator(key: str, name: str | None) -> type[nn.Module] | None:
    """The torch layer a plans file names (``"torch.nn.modules.conv.Conv2d"``), from a fixed table."""
    if name is None:
        return None
    module, _, short = str(name).rpartition(".")
    if short not in _OPERATORS or not (module == "" or module == "torch.nn" or module.startswith("torch.nn.")):
        raise CheckpointError(
            f"The nnU-Net plans name {name!r} as {key}, which is not a 2D torch layer slicewise knows "
            f"({', '.join(sorted(_OPERATORS))}); slicewise imports 2D nnU-Net configurations of these layers only."
        )
    return _OPERATORS[short]


# the layers every nnU-Net v2 default U-Net uses (older plans files name only the sizes)
NNUNET_LAYERS: dict[str, Any] = {
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}


class NnUNetAdapter(Adapter):
    arch = "nnunet"
    family = "nnunet"
    kind = "SMA"
    description = "nnU-Net v2 2D U-Net (dynamic_network_architectures PlainConvUNet / ResidualEncoderUNet)"
    default_kwargs = {
        "network": "PlainConvUNet",
        "n_stages": 4,
        "features_per_stage": [8, 16, 32, 64],
        "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3]] * 4,
        "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
        "n_conv_per_stage": [2, 2, 2, 2],
        "n_conv_per_stage_decoder": [2, 2, 2],
        **NNUNET_LAYERS,
    }

    def input_divisor(self, spec: ModelSpec) -> int:
        strides = self.kwargs(spec)["strides"]
        per_axis = [math.prod(int(s[axis]) for s in strides) for axis in range(2)]
        return math.lcm(*per_axis)

    def cam_layer(self, spec: ModelSpec) -> str | None:
        return f"encoder.stages.{int(self.kwargs(spec)['n_stages']) - 1}"  # the bottleneck

    def create(self, in_channels: int, num_classes: int, *, network: str, **kwargs: Any) -> nn.Module:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

        classes = {"PlainConvUNet": PlainConvUNet, "ResidualEncoderUNet": ResidualEncoderUNet}
        if network not in classes:
            raise CheckpointError(
                f"slicewise builds the nnU-Net networks {', '.join(NETWORKS)}, not {network!r}; "
                "export the model to ONNX to run it here."
            )
        for key in OPERATOR_KEYS:
            kwargs[key] = resolve_operator(key, kwargs.get(key))
        return classes[network](input_channels=in_channels, num_classes=num_classes, deep_supervision=False, **kwargs)
