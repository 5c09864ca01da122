"""The public entry points the widget, the CLI, training and the tests all call."""

from __future__ import annotations

import os

import numpy as np
import torch

from slicewise.core.inference import predict as _predict
from slicewise.core.slices import take_slice
from slicewise.core.types import Prediction, PredictOptions, SliceRef
from slicewise.models.loaded import LoadedModel, load

DEFAULT_MODEL = "polyp_unet"


def load_model(
    name_or_path: str | os.PathLike | LoadedModel = DEFAULT_MODEL,
    device: str | torch.device = "auto",
) -> LoadedModel:
    """A bundled model by name (``slicewise models``) or a slicewise ``.safetensors`` file.

    device: ``"auto"`` (CUDA with mixed precision when available, else CPU), ``"cpu"`` or ``"cuda"``.
    """
    if isinstance(name_or_path, LoadedModel):
        return name_or_path
    return load(name_or_path, device=device)


def predict(
    model: LoadedModel | str | os.PathLike,
    image: np.ndarray,
    *,
    slice_ref: SliceRef | None = None,
    rgb: bool | None = None,
) -> Prediction:
    """Segment a 2D image, or the slice ``slice_ref`` of a stack.

    image: (H, W) gray, (H, W, 3|4) RGB(A) or a stack (..., H, W[, C]); any int/float dtype.
    rgb: whether the last axis is colour; guessed (last axis of 3 or 4) when None.
    Returns labels (H, W) uint8 and probabilities (K, H, W) float32.
    """
    model = load_model(model)
    if rgb is None:
        rgb = image.ndim >= 3 and image.shape[-1] in (3, 4)
    ref = slice_ref or SliceRef(index=(0,) * max(0, image.ndim - (3 if rgb else 2)))
    plane = take_slice(image, ref, rgb=rgb) if image.ndim > (3 if rgb else 2) else np.asarray(image)
    return _predict(model, plane, PredictOptions(slice_ref=ref))
