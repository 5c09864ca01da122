"""The layers a person prompts with: an image's boxes (Shapes) and points (Points), and the prompts on a slice.

Each layer names the image it prompts in its metadata (``BOXES_KEY``, ``POINTS_KEY``), so a dock
opened later finds the layers an earlier one made. The prompts come out in slice pixels, ready for
``core.prompting``.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.layers import Image, Points, Shapes

from slicewise._qt.layers import spatial_shape
from slicewise.core.prompting import Prompt, with_points
from slicewise.core.types import SliceRef

BOXES_KEY = "slicewise_boxes"  # metadata of a boxes layer: the name of the image it prompts
POINTS_KEY = "slicewise_points"  # metadata of a points layer: the name of the image it prompts
POINT_COLOURS = {True: "lime", False: "red"}  # object, background


def prompt_layer(viewer: napari.Viewer, kind: type, key: str, image: Image) -> Any:
    """The ``kind`` layer slicewise made for ``image`` (its metadata ``key`` names the image), or None."""
    layers = viewer.layers
    return next((lay for lay in layers if isinstance(lay, kind) and lay.metadata.get(key) == image.name), None)


def image_of(viewer: napari.Viewer, layer: Shapes | Points) -> Image | None:
    """The image a boxes or points layer prompts, if it is still in the viewer."""
    name = layer.metadata.get(BOXES_KEY, layer.metadata.get(POINTS_KEY))
    return next((lay for lay in viewer.layers if isinstance(lay, Image) and lay.name == name), None)


def add_boxes(viewer: napari.Viewer, image: Image) -> Shapes:
    """A new "<image> boxes" layer over ``image``: yellow outlines, the image's scale and translate."""
    return viewer.add_shapes(
        ndim=len(spatial_shape(image)),
        name=f"{image.name} boxes",
        scale=image.scale,
        translate=image.translate,
        edge_color="yellow",
        face_color="transparent",
        edge_width=2,
        metadata={BOXES_KEY: image.name},
    )


def add_points(viewer: napari.Viewer, image: Image) -> Points:
    """A new "<image> points" layer over ``image``; its ``positive`` feature says object or background."""
    return viewer.add_points(
        ndim=len(spatial_shape(image)),
        name=f"{image.name} points",
        scale=image.scale,
        translate=image.translate,
        features={"positive": np.zeros(0, bool)},
        border_color="white",
        size=max(4.0, min(spatial_shape(image)[-2:]) / 40) * float(image.scale[-1]),
        metadata={POINTS_KEY: image.name},
    )


def boxes_on(layer: Shapes, ref: SliceRef) -> tuple[Prompt, ...]:
    """The rectangles of ``layer`` lying on slice ``ref``, as box prompts in slice pixels."""
    prompts = []
    for shape_type, vertices in zip(layer.shape_type, layer.data, strict=True):
        leading = tuple(int(round(v)) for v in vertices[0, :-2])
        if shape_type == "rectangle" and leading == ref.index:
            rows, cols = vertices[:, -2], vertices[:, -1]
            prompts.append(Prompt(box=(cols.min(), rows.min(), cols.max(), rows.max())))
    return tuple(prompts)


def points_on(layer: Points, ref: SliceRef) -> tuple[tuple[tuple[float, float], ...], tuple[int, ...]]:
    """The points of ``layer`` on slice ``ref`` as (x, y) slice pixels, and their labels (1 object, 0 background)."""
    positive = layer.features["positive"] if "positive" in layer.features else [True] * len(layer.data)
    kept = [
        ((float(point[-1]), float(point[-2])), int(bool(sign)))
        for point, sign in zip(layer.data, positive, strict=True)
        if tuple(int(round(v)) for v in point[:-2]) == ref.index
    ]
    return tuple(p for p, _ in kept), tuple(label for _, label in kept)


def prompts_on(boxes: Shapes | None, points: Points | None, ref: SliceRef) -> tuple[Prompt, ...]:
    """Every prompt on slice ``ref``: its boxes, and its points joined to them (``core.prompting.with_points``)."""
    coords, labels = points_on(points, ref) if points is not None else ((), ())
    return with_points(boxes_on(boxes, ref) if boxes is not None else (), coords, labels)
