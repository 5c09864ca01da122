"""The model registry: an explicit dict from architecture name to adapter, no import side effects.

Adding an architecture means one adapter class and one line here. Heavy libraries (MONAI
networks, transformers, timm) are imported only when an adapter is used.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from torch import nn

from slicewise.errors import UnknownModelError, printable
from slicewise.models.adapters.base import Adapter
from slicewise.models.spec import InputSpec, ModelSpec, OutputSpec

ARCHITECTURES: dict[str, str] = {
    "unet": "slicewise.models.adapters.monai:UNetAdapter",
    "basic_unet": "slicewise.models.adapters.monai:BasicUNetAdapter",
    "attention_unet": "slicewise.models.adapters.monai:AttentionUNetAdapter",
    "unetpp": "slicewise.models.adapters.monai:UNetPlusPlusAdapter",
    "dynunet": "slicewise.models.adapters.monai:DynUNetAdapter",
    "swin_unetr": "slicewise.models.adapters.monai:SwinUNETRAdapter",
    "segformer": "slicewise.models.adapters.transformers:SegformerAdapter",
    "upernet_convnext": "slicewise.models.adapters.transformers:UperNetConvNextAdapter",
    "upernet_swin": "slicewise.models.adapters.transformers:UperNetSwinAdapter",
    "dinov2": "slicewise.models.adapters.transformers:Dinov2Adapter",
    "dpt_dinov2": "slicewise.models.adapters.transformers:DPTDinov2Adapter",
    "timm_unet": "slicewise.models.adapters.timm:TimmUNetAdapter",
    "smp": "slicewise.models.adapters.smp:SMPAdapter",
    "nnunet": "slicewise.models.adapters.nnunet:NnUNetAdapter",
    "medsam_tinyvit": "slicewise.models.adapters.medsam:MedSAMEncoderAdapter",
    "lite_medsam": "slicewise.models.adapters.medsam:LiteMedSAMAdapter",
    "sam": "slicewise.models.adapters.sam:SAMAdapter",
    "taught": "slicewise.models.adapters.teach:TeachAdapter",
}


def architectures() -> list[str]:
    """The registry names, sorted."""
    return sorted(ARCHITECTURES)


def get_adapter(arch: str) -> Adapter:
    """The adapter for a registry name; unknown names list the valid ones."""
    try:
        target = ARCHITECTURES[arch]
    except KeyError:
        raise UnknownModelError(
            f"Unknown architecture {printable(arch)[:40]!r}; choose one of: {', '.join(architectures())}."
        ) from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def make_spec(
    arch: str,
    *,
    class_names: tuple[str, ...] = ("background", "foreground"),
    in_channels: int = 3,
    normalization: str = "percentile",
    size: int | None = None,
    name: str = "",
    **init_kwargs: Any,
) -> ModelSpec:
    """A complete spec for ``arch``: its defaults, overridden by ``init_kwargs``.

    size: the long side slices are resized to (``None``: their own resolution). An
    architecture with fixed input needs (``medsam_tinyvit``: RGB, 256 px) overrides them.
    """
    adapter = get_adapter(arch)
    kwargs = {**adapter.default_kwargs, **init_kwargs}
    draft = ModelSpec(arch=arch, init_kwargs=kwargs, input=InputSpec(channels=in_channels))
    input_fields = {"channels": in_channels, "size": size, **adapter.default_input}
    return ModelSpec(
        arch=arch,
        init_kwargs=kwargs,
        input=InputSpec(
            normalization=normalization,
            divisor=adapter.input_divisor(draft),
            **input_fields,
        ),
        output=OutputSpec(class_names=tuple(class_names), **adapter.default_output),
        name=name or arch,
    )


def build_model(spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
    """The network for ``spec``, randomly initialised or with a pretrained encoder.

    pretrained: ``None`` (random initialisation), a local weights file for the encoder, or
    ``"cache"`` to read the library's own pretrained weights from the local model cache. Nothing
    is downloaded; missing or unfitting weights raise ``PretrainedWeightsError``.
    """
    return get_adapter(spec.arch).build(spec, pretrained=pretrained)
