"""The Teach panel's work, run in the runner's ``"teach"`` lane: read the labels layer and the image,
call ``slicewise.core`` and hand back models, proposals and the next slice. Kept out of the panel so
that it only reads controls, starts these and writes layers.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
from napari.layers import Image, Labels

from slicewise._qt.jobs import PERSON_ERRORS, Failure, failure
from slicewise._qt.layers import done_slices
from slicewise.core.evaluation import class_names_for
from slicewise.core.inference import iter_predict, run_to_end
from slicewise.core.interpolate import check_fill_between, iter_fill_between
from slicewise.core.slices import take_slice
from slicewise.core.teach import TeachOptions, iter_next_slice, iter_teach
from slicewise.core.types import Prediction, PredictOptions, Progress, SliceRef
from slicewise.errors import SlicewiseError
from slicewise.models.loaded import LoadedModel
from slicewise.models.spec import MAX_CLASSES


def labelled_slices(labels: Labels, *, strokes: bool = False) -> tuple[np.ndarray, list[int]]:
    """The labels as a stack (a 2D layer is one slice) and the indices of the slices to teach from:
    those that carry labels and, with complete slices, those marked done (all background where
    nothing is painted: how a person says a slice holds no object)."""
    painted = np.asarray(labels.data)
    painted = painted[np.newaxis] if painted.ndim == 2 else painted
    done = set() if strokes else {z for z in done_slices(labels) if 0 <= z < painted.shape[0]}
    return painted, sorted({z for z in range(painted.shape[0]) if painted[z].any()} | done)


def image_slice(image: Image, ref: SliceRef) -> np.ndarray:
    """The slice ``ref`` of the image layer (the whole image when it is 2D), read alone (lazy stacks stay lazy)."""
    if not ref.index:
        return np.asarray(image.data)
    return take_slice(image.data, ref, rgb=image.rgb)


def teach_job(
    image: Image, labels: Labels, options: TeachOptions, previous: LoadedModel | None
) -> Generator[Progress, None, tuple[LoadedModel, Any] | Failure]:
    """Teach from the labelled slices of ``labels`` (the previous round's model as a start)."""
    try:
        painted, labelled = labelled_slices(labels, strokes=options.strokes)
        flat = image.data.ndim - int(image.rgb) == 2
        images = [image_slice(image, SliceRef() if flat else SliceRef((z,))) for z in labelled]
        model, report = yield from iter_teach(
            images,
            [painted[z] for z in labelled],
            options=options,
            previous=previous,
            name=f"taught on {labels.name}",
            names=[f"{image.name} slice {z}" for z in labelled],
        )
    except PERSON_ERRORS as error:
        return failure(error)
    return model, report


def propose_job(model: LoadedModel, image: Image, refs: list[SliceRef]) -> Generator[Any, None, list[bool] | Failure]:
    """Predict each of ``refs`` with the taught model, yielding each ``Prediction`` as it is ready;
    returns, for each, whether it proposes any object."""
    found = []
    for ref in refs:
        plane = image_slice(image, ref)
        try:
            prediction = run_to_end(iter_predict(model, plane, PredictOptions(slice_ref=ref, uncertainty="entropy")))
        except PERSON_ERRORS as error:
            return failure(error)
        yield prediction
        found.append(bool(prediction.labels.any()))
    return found


FILLED = "fill between slices"


def fill_job(labels: Labels) -> Generator[Prediction, None, list[int] | Failure]:
    """Each unlabelled slice between two labelled ones, filled from their shapes, as a ``Prediction``;
    returns the filled slices' indices."""
    painted, labelled = labelled_slices(labels)
    try:
        check_fill_between(painted, labelled)
        class_names = class_names_for(*(painted[z] for z in labelled))
        if len(class_names) > MAX_CLASSES:
            raise SlicewiseError(
                f"The labels use label {len(class_names) - 1}; Fill between proposes classes up to "
                f"{MAX_CLASSES - 1} (give objects of one kind one class, not one label each)."
            )
        filled_slices = []
        no_probabilities = np.empty(0, np.float32)  # no model: only the labels are shown (as predict_files keeps)
        for z, filled in iter_fill_between(painted, labelled):
            yield Prediction(filled.astype(np.uint8), no_probabilities, class_names, FILLED, "cpu", SliceRef((z,)))
            filled_slices.append(z)
    except PERSON_ERRORS as error:
        return failure(error)
    return filled_slices


def next_slice_job(model: LoadedModel, image: Image, labelled: list[int]) -> Generator[Progress, None, Any]:
    stack = [image_slice(image, SliceRef((z,))) for z in range(image.data.shape[0])]
    try:
        return (yield from iter_next_slice(model, stack, labelled))
    except PERSON_ERRORS as error:
        return failure(error)
