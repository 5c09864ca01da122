"""The jobs behind the panels: plain generators that the dock's ``JobRunner`` runs in napari workers.

Each yields ``Progress`` (or one result per slice) and returns its result. Person-caused errors
come back as a ``Failure`` value (a worker treats raised exceptions as crashes); a model loaded by
any job goes into the shared cache at once, so a superseded job keeps it.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass

import napari
import numpy as np
import torch

from slicewise.api import load_model
from slicewise.core.inference import iter_predict
from slicewise.core.prompting import Prompt, embed, iter_predict_prompts, iter_propagate
from slicewise.core.review import iter_rank_slices
from slicewise.core.slices import take_slice
from slicewise.core.types import Prediction, PredictOptions, Progress, SliceRef
from slicewise.errors import SlicewiseError
from slicewise.models.loaded import LoadedModel

ModelCache = dict[tuple[str, str, tuple[str, ...]], LoadedModel]  # (model, device, class names given)


@dataclass(frozen=True)
class Request:
    """One prediction to run: which image slice, with which model on which device."""

    layer: napari.layers.Image
    slice_ref: SliceRef
    model: str
    device: str
    uncertainty: str | None
    explain: str | None = None
    target_class: int | None = None
    classes: tuple[str, ...] = ()  # names for a foreign model's classes, if its files have none


@dataclass(frozen=True)
class Failure:
    """A person-caused error, returned rather than raised."""

    message: str


@dataclass(frozen=True)
class PromptRequest:
    """Boxes on one slice for a promptable model; no prompts: only embed the slice ahead of the first box.

    For ``propagate_job``, ``mask`` is the object on ``slice_ref`` to follow through the stack.
    """

    layer: napari.layers.Image
    slice_ref: SliceRef
    model: str
    device: str
    prompts: tuple[Prompt, ...] = ()
    mask: np.ndarray | None = None
    classes: tuple[str, ...] = ()


# a person's mistake or a full GPU ends a job as a Failure; anything else is a bug and a traceback
PERSON_ERRORS = (SlicewiseError, torch.OutOfMemoryError)
_LOADING = threading.Lock()  # jobs run in several worker threads and share one model cache


def failure(error: Exception) -> Failure:
    """The one sentence a person sees for ``error`` (one of ``PERSON_ERRORS``)."""
    if isinstance(error, torch.OutOfMemoryError):
        return Failure("The model ran out of GPU memory on this slice; choose device cpu or a smaller model.")
    return Failure(str(error))


def modality_warning(model: LoadedModel, layer: napari.layers.Image) -> str | None:
    """A sentence when ``layer`` is not the kind of image ``model`` was trained on (colour vs grayscale), else None.

    The model's channels and training data come from its header; the image's modality, when a medical
    reader found one, from its layer. The prediction still runs: the person decides whether it helps.
    """
    channels = model.spec.input.channels
    if channels not in (1, 3) or (channels == 3) == bool(layer.rgb):
        return None
    data = ", ".join(str(name) for name in model.provenance.get("data", []) if name)
    trained = f"{'colour (RGB)' if channels == 3 else 'grayscale'} images" + (f" of {data}" if data else "")
    modality = layer.metadata.get("slicewise_medical", {}).get("modality", "")
    kind = f"a {'colour' if layer.rgb else 'grayscale'}{f' {modality}' if modality else ''} image"
    return (
        f"{model.name} was trained on {trained}, and '{layer.name}' is {kind}: its proposals may mean little "
        "here. slicewise still predicts; choose a model trained on images like these for real use."
    )


def model_key(request: Request | PromptRequest) -> tuple[str, str, tuple[str, ...]]:
    """The cache key of a request's model: name or path, device, and the class names given for it."""
    return (request.model, request.device, request.classes)


def cached_model(request: Request | PromptRequest, models: ModelCache) -> LoadedModel:
    """The request's model from the cache, loading (and caching) it the first time, once across threads."""
    key = model_key(request)
    with _LOADING:
        if key not in models:
            models[key] = load_model(request.model, device=request.device, classes=request.classes or None)
        return models[key]


def predict_job(request: Request, models: ModelCache) -> Generator[Progress, None, Prediction | Failure]:
    """Load the model unless cached, take the slice and predict it."""
    try:
        if model_key(request) not in models:
            yield Progress(0, 1, "load model")
        model = cached_model(request, models)
        plane = take_slice(request.layer.data, request.slice_ref, rgb=request.layer.rgb)
        options = PredictOptions(
            slice_ref=request.slice_ref,
            uncertainty=request.uncertainty,
            explain=request.explain,
            target_class=request.target_class,
        )
        prediction = yield from iter_predict(model, plane, options)
    except PERSON_ERRORS as error:
        return failure(error)
    return prediction


def prompt_job(request: PromptRequest, models: ModelCache) -> Generator[Progress, None, Prediction | Failure | None]:
    """Load the model unless cached, embed the slice unless cached, and decode the prompts (if any)."""
    try:
        if model_key(request) not in models:
            yield Progress(0, 1, "load model")
        model = cached_model(request, models)
        plane = take_slice(request.layer.data, request.slice_ref, rgb=request.layer.rgb)
        if not request.prompts:
            embed(model, plane)
            return None
        return (yield from iter_predict_prompts(model, plane, request.prompts, slice_ref=request.slice_ref))
    except PERSON_ERRORS as error:
        return failure(error)


def propagate_job(request: PromptRequest, models: ModelCache) -> Generator[Prediction, None, int | Failure]:
    """Follow ``request.mask`` from its slice through the stack; yield each slice's proposal."""
    try:
        model = cached_model(request, models)
        start = request.slice_ref.index[0] if request.slice_ref.index else 0
        stack, rgb = request.layer.data, request.layer.rgb
        return (yield from iter_propagate(model, stack, start=start, mask=request.mask, rgb=rgb))
    except PERSON_ERRORS as error:
        return failure(error)


def rank_job(
    request: Request, models: ModelCache
) -> Generator[Prediction, None, list[tuple[SliceRef, float]] | Failure]:
    """Predict every slice of the request's stack with uncertainty; return them ranked."""
    try:
        model = cached_model(request, models)
        stack, rgb = request.layer.data, request.layer.rgb
        return (yield from iter_rank_slices(model, stack, rgb=rgb, uncertainty=request.uncertainty or "entropy"))
    except PERSON_ERRORS as error:
        return failure(error)
