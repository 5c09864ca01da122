"""Segment Anything (Meta's ``segment_anything`` ``Sam``): a ViT image encoder, SAM's prompt
encoder and mask decoder; one mask for the object a box or points mark.

The network comes from the ``segment-anything`` package; its shape is init kwargs, which
``sam_kwargs`` reads from a checkpoint's tensor shapes, so the released ViT-B/L/H, MedSAM
(a fine-tuned ViT-B) and any other size load. The defaults are SAM ViT-B at 1024 px.

SAM's own preprocessing resizes the long side to ``img_size``, keeps 0–255 RGB and normalises
with the ImageNet ``pixel_mean``/``pixel_std`` the ``Sam`` module holds; MedSAM min-max scales
to [0, 1]. The input spec scales each slice min-max to [0, 1]; with ``pixel_normalization``
``embed`` maps that to 0–255 and applies SAM's mean/std, otherwise the [0, 1] input goes to the
encoder as MedSAM's does.
"""

from __future__ import annotations

import os
import re
from functools import partial
from typing import Any

import torch
from torch import nn

from slicewise._compat import ensure_torchvision_ops
from slicewise.errors import CheckpointError, PretrainedWeightsError
from slicewise.models.adapters.base import read_weights
from slicewise.models.adapters.medsam import LiteMedSAMAdapter, _fitting
from slicewise.models.spec import ModelSpec

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# the released image encoders, by (embed_dim, depth)
VARIANTS = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
# not recorded by any tensor's shape: the mask decoder's attention splits its width into 8 heads in every SAM
DECODER_NUM_HEADS = 8
_BLOCK = re.compile(r"image_encoder\.blocks\.(\d+)\.attn\.rel_pos_h")


def _package() -> Any:
    """``segment_anything.modeling``, imported after torchvision's operators are made loadable."""
    ensure_torchvision_ops()
    try:
        import segment_anything.modeling as modeling
    except ImportError as error:
        raise PretrainedWeightsError(
            "SAM models need the segment-anything package; install it with `pip install segment-anything==1.0`."
        ) from error
    return modeling


def sam_kwargs(state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """The ``sam`` init kwargs (without ``pixel_normalization``) a SAM state dict's shapes imply,
    or None when it is not a SAM with a ViT image encoder.

    Everything but the mask decoder's head count (``DECODER_NUM_HEADS``) is in the shapes: a
    global-attention block's relative positions span the whole grid (2·grid − 1), a windowed
    block's its window (2·window − 1).
    """
    needed = (
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.pos_embed",
        "image_encoder.neck.0.weight",
        "prompt_encoder.mask_downscaling.3.weight",
        "mask_decoder.mask_tokens.weight",
        "mask_decoder.iou_prediction_head.layers.0.weight",
        "mask_decoder.transformer.layers.0.mlp.lin1.weight",
    )
    blocks = sorted(int(match.group(1)) for key in state if (match := _BLOCK.fullmatch(key)))
    if any(key not in state for key in needed) or not blocks or blocks != list(range(len(blocks))):
        return None
    embed_dim, _, patch_size, _ = state["image_encoder.patch_embed.proj.weight"].shape
    grid = state["image_encoder.pos_embed"].shape[1]
    spans = [state[f"image_encoder.blocks.{index}.attn.rel_pos_h"].shape[0] for index in blocks]
    windows = {(span + 1) // 2 for span in spans if span != 2 * grid - 1}
    if len(windows) > 1:
        return None
    head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
    decoder_layers = {int(key.split(".")[3]) for key in state if key.startswith("mask_decoder.transformer.layers.")}
    iou_layers = {int(key.split(".")[3]) for key in state if key.startswith("mask_decoder.iou_prediction_head.layers.")}
    return {
        "img_size": int(patch_size * grid),
        "patch_size": int(patch_size),
        "embed_dim": int(embed_dim),
        "depth": len(blocks),
        "num_heads": int(embed_dim // head_dim),
        "mlp_ratio": state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
        "qkv_bias": "image_encoder.blocks.0.attn.qkv.bias" in state,
        "window_size": windows.pop() if windows else 0,
        "global_attn_indexes": [index for index, span in zip(blocks, spans, strict=True) if span == 2 * grid - 1],
        "out_chans": int(state["image_encoder.neck.0.weight"].shape[0]),
        "mask_in_chans": int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
        "decoder_depth": len(decoder_layers),
        "decoder_mlp_dim": int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
        "decoder_num_heads": DECODER_NUM_HEADS,
        "num_multimask_outputs": int(state["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
        "iou_head_depth": len(iou_layers),
        "iou_head_hidden_dim": int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
    }


def variant(kwargs: dict[str, Any]) -> str:
    """``vit_b``/``vit_l``/``vit_h`` for the released encoder sizes, else ``custom``."""
    return VARIANTS.get((kwargs["embed_dim"], kwargs["depth"]), "custom")


class SAMAdapter(LiteMedSAMAdapter):
    """Segment Anything and MedSAM: boxes and points, one mask each, decoded against a cached
    slice embedding (``slicewise.core.prompting``) exactly as ``lite_medsam`` is."""

    arch = "sam"
    family = "sam"
    kind = "GP-VM"
    description = "Segment Anything / MedSAM (ViT encoder, prompt encoder, mask decoder; ViT-B 94 M params)"
    default_kwargs = {
        "img_size": 1024,
        "patch_size": 16,
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "window_size": 14,
        "global_attn_indexes": [2, 5, 8, 11],
        "out_chans": 256,
        "mask_in_chans": 16,
        "decoder_depth": 2,
        "decoder_mlp_dim": 2048,
        "decoder_num_heads": DECODER_NUM_HEADS,
        "num_multimask_outputs": 3,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": 256,
        "pixel_normalization": True,
    }
    # RGB (gray slices are repeated), long side img_size, min-max to [0, 1]
    default_input = {"channels": 3, "size": 1024, "percentiles": (0.0, 100.0)}
    prompt_kinds = ("box", "points")

    def input_divisor(self, spec: ModelSpec) -> int:
        return self.kwargs(spec)["img_size"]  # the long side at img_size pads to exactly img_size²

    def create(
        self,
        in_channels: int,
        num_classes: int,
        *,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        window_size: int,
        global_attn_indexes: list[int],
        out_chans: int,
        mask_in_chans: int,
        decoder_depth: int,
        decoder_mlp_dim: int,
        decoder_num_heads: int,
        num_multimask_outputs: int,
        iou_head_depth: int,
        iou_head_hidden_dim: int,
        pixel_normalization: bool,
    ) -> nn.Module:
        """``Sam`` as segment_anything's ``build_sam`` assembles it, at the given sizes.

        Without ``pixel_normalization`` the module's mean/std are 0/255, so ``embed`` hands the
        [0, 1] input to the encoder unchanged (MedSAM).
        """
        if num_classes != 2:
            raise CheckpointError(
                f"sam segments one object per prompt (background and object), not {num_classes} classes."
            )
        modeling = _package()
        grid = img_size // patch_size
        return modeling.Sam(
            image_encoder=modeling.ImageEncoderViT(
                img_size=img_size,
                patch_size=patch_size,
                in_chans=in_channels,
                embed_dim=embed_dim,
                depth=depth,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                out_chans=out_chans,
                qkv_bias=qkv_bias,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=window_size,
                global_attn_indexes=tuple(global_attn_indexes),
            ),
            prompt_encoder=modeling.PromptEncoder(
                embed_dim=out_chans,
                image_embedding_size=(grid, grid),
                input_image_size=(img_size, img_size),
                mask_in_chans=mask_in_chans,
            ),
            mask_decoder=modeling.MaskDecoder(
                transformer_dim=out_chans,
                transformer=modeling.TwoWayTransformer(
                    depth=decoder_depth, embedding_dim=out_chans, mlp_dim=decoder_mlp_dim, num_heads=decoder_num_heads
                ),
                num_multimask_outputs=num_multimask_outputs,
                iou_head_depth=iou_head_depth,
                iou_head_hidden_dim=iou_head_hidden_dim,
            ),
            pixel_mean=list(IMAGENET_MEAN) if pixel_normalization else [0.0, 0.0, 0.0],
            pixel_std=list(IMAGENET_STD) if pixel_normalization else [255.0, 255.0, 255.0],
        )

    def build(self, spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
        """The model; ``pretrained`` is a SAM checkpoint file of the spec's shape (there is no cache)."""
        if pretrained == "cache":
            raise PretrainedWeightsError(
                "slicewise keeps no SAM weights of its own; pass the path of a SAM checkpoint such as "
                "sam_vit_b_01ec64.pth or medsam_vit_b.pth."
            )
        kwargs = self.kwargs(spec)
        state = None if pretrained is None else read_weights(pretrained)
        if state is not None:
            found = sam_kwargs(state)  # the decoder's head count is not in the weights: the spec's is kept
            if found is None or any(found[key] != kwargs[key] for key in found if key != "decoder_num_heads"):
                raise PretrainedWeightsError(
                    f"The weights in {os.fspath(pretrained)} are not a SAM model of this spec's size "
                    f"({variant(kwargs)}, {kwargs['img_size']} px); import the file with `slicewise convert`, "
                    "which reads its size from the weights."
                )
        model = self.create(spec.input.channels, spec.output.num_classes, **kwargs)
        if state is not None:
            refusal = f"The weights in {os.fspath(pretrained)} do not fit the SAM model of this spec."
            model.load_state_dict(_fitting(state, model.state_dict(), refusal))
        return model

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [0, 1] → (N, C, S/16, S/16) image embeddings, through SAM's own
        ``preprocess`` on the 0–255 scale (ImageNet mean/std, or none for MedSAM)."""
        return model.image_encoder(model.preprocess(x * 255.0))
