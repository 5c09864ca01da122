"""Specialised medical architectures (SMAs) from MONAI's network zoo, in 2D."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from slicewise.models.adapters.base import Adapter
from slicewise.models.spec import ModelSpec


def _stride_product(strides: Any) -> int:
    return math.prod(int(s) for s in strides)


class UNetAdapter(Adapter):
    arch = "unet"
    family = "monai"
    kind = "SMA"
    description = "MONAI UNet (residual units, strided convolutions): small and fast on CPU"
    default_kwargs = {
        "channels": [16, 32, 64, 128, 256],
        "strides": [2, 2, 2, 2],
        "num_res_units": 2,
        "dropout": 0.0,
        "norm": "batch",
    }

    def input_divisor(self, spec: ModelSpec) -> int:
        return _stride_product(self.kwargs(spec)["strides"])

    def cam_layer(self, spec: ModelSpec) -> str | None:
        return _bottleneck(self.kwargs(spec)["channels"])

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        from monai.networks.nets import UNet

        return UNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, **kwargs)


class AttentionUNetAdapter(Adapter):
    arch = "attention_unet"
    family = "monai"
    kind = "SMA"
    description = "MONAI Attention U-Net (Oktay et al. 2018)"
    default_kwargs = {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "dropout": 0.0}

    def input_divisor(self, spec: ModelSpec) -> int:
        return _stride_product(self.kwargs(spec)["strides"])

    def cam_layer(self, spec: ModelSpec) -> str | None:
        return _bottleneck(self.kwargs(spec)["channels"])

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        from monai.networks.nets import AttentionUnet

        return AttentionUnet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, **kwargs)


class BasicUNetAdapter(Adapter):
    arch = "basic_unet"
    family = "monai"
    kind = "SMA"
    description = "MONAI BasicUNet: the classic four-level U-Net"
    default_kwargs = {"features": [32, 32, 64, 128, 256, 32], "dropout": 0.0}
    cam_target_layer = "down_4"  # the bottleneck (1/16)

    def input_divisor(self, spec: ModelSpec) -> int:
        return 16

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        from monai.networks.nets import BasicUNet

        return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, **kwargs)


class UNetPlusPlusAdapter(Adapter):
    arch = "unetpp"
    family = "monai"
    kind = "SMA"
    description = "MONAI BasicUNetPlusPlus (UNet++, nested dense skip paths)"
    default_kwargs = {"features": [16, 16, 32, 64, 128, 16], "dropout": 0.0}
    cam_target_layer = "conv_4_0"  # the bottleneck (1/16)

    def input_divisor(self, spec: ModelSpec) -> int:
        return 16

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        from monai.networks.nets import BasicUNetPlusPlus

        return BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, **kwargs)

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)[-1]


class DynUNetAdapter(Adapter):
    arch = "dynunet"
    family = "monai"
    kind = "SMA"
    description = "MONAI DynUNet: the nnU-Net-style U-Net (residual blocks, instance norm)"
    default_kwargs = {
        "kernel_size": [3, 3, 3, 3, 3],
        "strides": [1, 2, 2, 2, 2],
        "upsample_kernel_size": [2, 2, 2, 2],
        "filters": [16, 32, 64, 128, 256],
        "res_block": True,
    }
    cam_target_layer = "bottleneck"  # 1/16

    def input_divisor(self, spec: ModelSpec) -> int:
        return _stride_product(self.kwargs(spec)["strides"])

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        from monai.networks.nets import DynUNet

        return DynUNet(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, **kwargs)


class SwinUNETRAdapter(Adapter):
    arch = "swin_unetr"
    family = "monai"
    kind = "SMA"
    description = "MONAI Swin-UNETR in 2D (Swin transformer encoder, CNN decoder)"
    default_kwargs = {"feature_size": 12, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24]}
    cam_target_layer = "encoder10"  # the CNN bottleneck on the Swin encoder's last stage (1/32)

    def input_divisor(self, spec: ModelSpec) -> int:
        return 32

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=in_channels, out_channels=num_classes, spatial_dims=2, **kwargs)


def _bottleneck(channels: list[int]) -> str:
    """MONAI's (Attention) UNet nests one skip connection per level: the bottleneck is the innermost."""
    return "model" + ".1.submodule" * (len(channels) - 1)
