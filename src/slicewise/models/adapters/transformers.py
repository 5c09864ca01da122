"""General-purpose vision models (GP-VMs) from Hugging Face transformers, built from a config.

Every network is randomly initialised from a small config (no hub access). A pretrained
encoder is an explicit option: ``build(spec, pretrained=FILE)`` reads a local weights file and
``pretrained="cache"`` reads the adapter's ``pretrained_id`` from the local Hugging Face cache,
both through transformers' own ``from_pretrained`` (key renames, ``segformer.``-style
prefixes) with ``local_files_only=True``.
"""

from __future__ import annotations

import functools
import os
from typing import Any, ClassVar

import torch
from torch import nn

from slicewise._compat import ensure_torchvision_ops
from slicewise.errors import PretrainedWeightsError
from slicewise.models.adapters.base import Adapter, read_weights, resize_logits
from slicewise.models.spec import ModelSpec

_STAGES = ["stage1", "stage2", "stage3", "stage4"]
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)


class TransformersAdapter(Adapter):
    """Shared by the transformers GP-VMs: the pretrained-encoder option and the 1/32 divisor."""

    family = "transformers"
    kind = "GP-VM"
    channels_last = False  # attention blocks gain nothing from it (measured on CPU)
    encoder_attr: ClassVar[str]  # the submodule that pretrained weights initialise
    pretrained_id: ClassVar[str]  # the hub checkpoint that pretrained="cache" reads, if cached

    def input_divisor(self, spec: ModelSpec) -> int:
        return 32

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """transformers' segmentation heads predict at 1/4 resolution: upsample to the input."""
        return resize_logits(model(pixel_values=x).logits, x.shape[-2:])

    def build(self, spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
        """The network for ``spec``; ``pretrained`` (a file or ``"cache"``) sets the encoder."""
        model = super().build(spec)
        if pretrained is not None:
            encoder = model.get_submodule(self.encoder_attr)
            encoder.load_state_dict(self._pretrained_state(encoder, pretrained))
        return model

    def _pretrained_state(self, encoder: nn.Module, pretrained: str | os.PathLike) -> dict[str, torch.Tensor]:
        """The encoder's state dict as transformers loads it from ``pretrained``, checked to fit.

        Normalisation layers a classification checkpoint lacks (the per-stage output norms of
        ConvNeXt and Swin backbones) start fresh; any other missing tensor is an error.
        """
        cached = pretrained == "cache"
        source = self.pretrained_id if cached else os.fspath(pretrained)
        options = {"config": encoder.config, "output_loading_info": True}
        if not cached:
            options["state_dict"] = read_weights(pretrained)
        name = self.pretrained_id if cached else None
        try:
            loaded, info = type(encoder).from_pretrained(
                name, local_files_only=True, trust_remote_code=False, **options
            )
        except OSError as error:
            raise PretrainedWeightsError(
                f"The weights of {self.pretrained_id} are not in the local Hugging Face cache; "
                "copy them to this machine and pass pretrained='/path/to/model.safetensors'."
            ) from error
        except RuntimeError as error:
            raise PretrainedWeightsError(
                f"The weights in {source} have other shapes than the {self.arch} encoder in this "
                "spec; give the spec the input channels and init kwargs of the weights."
            ) from error
        missing = sorted(info["missing_keys"])
        if any(not _is_norm(encoder, key) for key in missing):
            raise PretrainedWeightsError(
                f"The weights in {source} lack {len(missing)} of the {len(encoder.state_dict())} "
                f"tensors of the {self.arch} encoder (first: {missing[0]!r}); pass the weights of "
                f"a {type(encoder).__name__} with the sizes in the spec."
            )
        return loaded.state_dict()


def _is_norm(module: nn.Module, key: str) -> bool:
    return isinstance(module.get_submodule(key.rpartition(".")[0]), _NORMS)


class SegformerAdapter(TransformersAdapter):
    arch = "segformer"
    description = "SegFormer (Mix Transformer encoder, all-MLP decoder), MiT-b0 sizes"
    default_kwargs = {
        "depths": [2, 2, 2, 2],
        "hidden_sizes": [32, 64, 160, 256],
        "num_attention_heads": [1, 2, 5, 8],
        "decoder_hidden_size": 256,
    }
    cam_target_layer = "segformer.stages.3"  # the last encoder stage (1/32)
    encoder_attr = "segformer"
    pretrained_id = "nvidia/mit-b0"

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        ensure_torchvision_ops()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        config = SegformerConfig(num_channels=in_channels, num_labels=num_classes, **kwargs)
        return SegformerForSemanticSegmentation(config)


class UperNetConvNextAdapter(TransformersAdapter):
    arch = "upernet_convnext"
    description = "UperNet (pyramid pooling + FPN decoder) on a ConvNeXt backbone, ConvNeXt-atto sizes"
    default_kwargs = {
        "depths": [2, 2, 6, 2],
        "hidden_sizes": [40, 80, 160, 320],
        "decoder_hidden_size": 128,
    }
    cam_target_layer = "decode_head.bottleneck"  # the pyramid pooling fusion (1/32)
    channels_last = True  # ~10% faster on CPU: the backbone and decoder are all convolutions
    encoder_attr = "backbone"
    pretrained_id = "facebook/convnext-tiny-224"

    def create(self, in_channels: int, num_classes: int, *, decoder_hidden_size: int, **backbone: Any) -> nn.Module:
        ensure_torchvision_ops()
        from transformers import ConvNextConfig

        config = ConvNextConfig(num_channels=in_channels, out_features=_STAGES, **backbone)
        return _upernet(config, num_classes, decoder_hidden_size)


class UperNetSwinAdapter(UperNetConvNextAdapter):
    arch = "upernet_swin"
    description = "UperNet (pyramid pooling + FPN decoder) on a Swin backbone, half Swin-T width"
    default_kwargs = {
        "embed_dim": 48,
        "depths": [2, 2, 2, 2],
        "num_heads": [3, 6, 12, 24],
        "window_size": 7,
        "decoder_hidden_size": 128,
    }
    channels_last = False
    pretrained_id = "microsoft/swin-tiny-patch4-window7-224"

    def create(self, in_channels: int, num_classes: int, *, decoder_hidden_size: int, **backbone: Any) -> nn.Module:
        ensure_torchvision_ops()
        from transformers import SwinConfig

        config = SwinConfig(num_channels=in_channels, out_features=_STAGES, **backbone)
        return _upernet(config, num_classes, decoder_hidden_size)


def _upernet(backbone_config: Any, num_classes: int, decoder_hidden_size: int) -> nn.Module:
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    config = UperNetConfig(
        backbone_config=backbone_config,
        hidden_size=decoder_hidden_size,
        num_labels=num_classes,
        use_auxiliary_head=False,  # a training-time loss head; it would only cost time here
    )
    return UperNetForSemanticSegmentation(config)


class Dinov2Segmenter(nn.Module):
    """A DINOv2 ViT with a linear head on its patch tokens (the DINOv2 paper's linear probe).

    Returns (N, K, H/patch, W/patch) logits; the adapter upsamples them to the input size.
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Sequential(nn.BatchNorm2d(hidden), nn.Conv2d(hidden, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patch = self.backbone.config.patch_size
        tokens = self.backbone(pixel_values=x).last_hidden_state[:, 1:]  # drop the CLS token
        grid = tokens.transpose(1, 2).unflatten(2, (x.shape[2] // patch, x.shape[3] // patch))
        return self.head(grid)


class Dinov2Adapter(TransformersAdapter):
    arch = "dinov2"
    description = "DINOv2 ViT (patch 14) with a linear head on the patch tokens, half ViT-S width"
    default_kwargs = {
        "hidden_size": 192,
        "num_hidden_layers": 6,
        "num_attention_heads": 3,
        "patch_size": 14,
        "image_size": 518,
    }
    cam_target_layer = "backbone.embeddings.patch_embeddings.projection"  # the patch tokens (1/14)
    encoder_attr = "backbone"
    pretrained_id = "facebook/dinov2-small"

    def input_divisor(self, spec: ModelSpec) -> int:
        return int(self.kwargs(spec)["patch_size"])

    def create(self, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
        ensure_torchvision_ops()
        from transformers import Dinov2Config, Dinov2Model

        backbone = Dinov2Model(Dinov2Config(num_channels=in_channels, **kwargs))
        return Dinov2Segmenter(backbone, num_classes)

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return resize_logits(model(x), x.shape[-2:])


@functools.cache
def _dpt_dinov2_class() -> type[nn.Module]:
    """transformers' DPT neck and segmentation head on its DINOv2 backbone, as a transformers model.

    transformers' own ``DPTForSemanticSegmentation`` builds a plain ViT and ignores a DINOv2
    ``backbone_config``; only ``DPTForDepthEstimation`` reads one. This model wires the backbone
    into the neck as ``DPTForDepthEstimation`` does (``backbone.``, ``neck.``, ``head.`` keys) and
    puts the segmentation head on top, without the training-only auxiliary head. Defined on first
    use because transformers is imported lazily.
    """
    ensure_torchvision_ops()
    from transformers.backbone_utils import load_backbone
    from transformers.models.dpt.modeling_dpt import DPTNeck, DPTPreTrainedModel, DPTSemanticSegmentationHead

    class DPTDinov2ForSemanticSegmentation(DPTPreTrainedModel):
        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.backbone = load_backbone(config)
            self.neck = DPTNeck(config)
            self.head = DPTSemanticSegmentationHead(config)
            self.post_init()

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            """(N, K, H', W') logits; DINOv2 interpolates its position embeddings to any multiple of the patch."""
            patch = self.config.backbone_config.patch_size
            features = list(self.backbone(pixel_values).feature_maps)
            fused = self.neck(features, pixel_values.shape[2] // patch, pixel_values.shape[3] // patch)
            return self.head(fused)

    return DPTDinov2ForSemanticSegmentation


def __getattr__(name: str) -> Any:
    """``DPTDinov2ForSemanticSegmentation``, built on first access (PEP 562)."""
    if name == "DPTDinov2ForSemanticSegmentation":
        return _dpt_dinov2_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DPTDinov2Adapter(TransformersAdapter):
    arch = "dpt_dinov2"
    description = "DPT (reassemble + fusion neck, conv head) on a DINOv2 backbone (patch 14), half ViT-S width"
    default_kwargs = {
        "backbone_config": {
            "hidden_size": 192,
            "num_hidden_layers": 4,
            "num_attention_heads": 3,
            "patch_size": 14,
            "image_size": 518,
            "out_indices": [1, 2, 3, 4],
        },
        "neck_hidden_sizes": [24, 48, 96, 192],
        "fusion_hidden_size": 64,
    }
    cam_target_layer = "neck.fusion_stage.layers.0"  # the fused deepest reassembled map (1/28, upsampled)
    encoder_attr = "backbone"
    pretrained_id = "facebook/dinov2-small"

    def input_divisor(self, spec: ModelSpec) -> int:
        return int(self.kwargs(spec)["backbone_config"]["patch_size"])

    def create(self, in_channels: int, num_classes: int, *, backbone_config: dict[str, Any], **dpt: Any) -> nn.Module:
        ensure_torchvision_ops()
        from transformers import Dinov2Config, DPTConfig

        # the neck reads the CLS token (readout) and reshapes the tokens itself
        backbone = Dinov2Config(num_channels=in_channels, reshape_hidden_states=False, **backbone_config)
        config = DPTConfig(backbone_config=backbone, num_labels=num_classes, use_auxiliary_head=False, **dpt)
        return _dpt_dinov2_class()(config)

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return resize_logits(model(x), x.shape[-2:])
