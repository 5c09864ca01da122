"""Write predictions into slicewise's own napari layers, never into a person's layers.

Output layers are found by their ``metadata["slicewise"]`` key (image, model, role), so a
renamed or repeated prediction updates the same layer, and each is named after the model,
the image and the slice that produced it.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from slicewise.core.slices import put_slice
from slicewise.core.types import Prediction

META_KEY = "slicewise"
# bright colours that stand out on endoscopy, fundus, ultrasound and MR alike (class 1, 2, ...)
CLASS_COLOURS = ("cyan", "yellow", "magenta", "lime", "orange", "dodgerblue", "red", "white")


def class_colormap(num_classes: int) -> DirectLabelColormap:
    """A fixed colour per class, so the same class looks the same in every prediction layer."""
    colours = {None: "transparent", 0: "transparent"}
    colours.update({k: CLASS_COLOURS[(k - 1) % len(CLASS_COLOURS)] for k in range(1, num_classes)})
    return DirectLabelColormap(color_dict=colours)


def spatial_shape(layer: napari.layers.Image) -> tuple[int, ...]:
    """The layer's shape without its RGB(A) channel axis."""
    return tuple(layer.data.shape[:-1] if layer.rgb else layer.data.shape)


def is_output(layer: napari.layers.Layer) -> bool:
    """Whether slicewise made this layer (so it may be overwritten by a new prediction)."""
    return META_KEY in layer.metadata


def _find_or_add(
    viewer: napari.Viewer, image: napari.layers.Image, identity: dict[str, Any], make: Any
) -> napari.layers.Layer:
    for layer in viewer.layers:
        if layer.metadata.get(META_KEY) == identity and layer.data.shape[-len(spatial_shape(image)) :] == spatial_shape(
            image
        ):
            return layer
    layer = make()
    layer.metadata[META_KEY] = identity
    active = viewer.layers.selection.active
    viewer.add_layer(layer)
    if active is not None:  # a new output layer must not take the person's tool (brush, box) away
        viewer.layers.selection.active = active
    return layer


def show_prediction(viewer: napari.Viewer, image: napari.layers.Image, prediction: Prediction) -> napari.layers.Labels:
    """Write one slice's labels, probabilities, uncertainty and explanation into their own layers.

    Probability and uncertainty layers start hidden (float images in [0, 1]); the labels show.
    """
    shape = spatial_shape(image)
    where = prediction.slice_ref.describe()
    geometry = {"scale": image.scale, "translate": image.translate}
    identity = {"image": image.name, "model": prediction.model_name}

    labels = _find_or_add(
        viewer,
        image,
        {**identity, "role": "labels"},
        lambda: napari.layers.Labels(
            np.zeros(shape, dtype=np.uint8),
            opacity=0.45,
            colormap=class_colormap(len(prediction.class_names)),
            **geometry,
        ),
    )
    put_slice(labels.data, prediction.slice_ref, prediction.labels)
    labels.name = f"{prediction.model_name} labels ({where})"
    labels.refresh()

    maps = [
        (f"probability:{name}", f"P({name})", prediction.probabilities[k], "inferno")
        for k, name in enumerate(prediction.class_names[1:], start=1)
    ]
    if prediction.uncertainty is not None:
        maps.append(("uncertainty", "uncertainty", prediction.uncertainty, "magma"))
    if prediction.explanation is not None:
        explained = prediction.class_names[prediction.target_class]
        maps.append(("explanation", f"explanation of {explained}", prediction.explanation, "hot"))
    for role, title, values, colormap in maps:
        layer = _find_or_add(
            viewer,
            image,
            {**identity, "role": role},
            lambda colormap=colormap: napari.layers.Image(
                np.zeros(shape, dtype=np.float32),
                colormap=colormap,
                contrast_limits=(0.0, 1.0),
                blending="additive",
                opacity=0.7,
                visible=False,
                **geometry,
            ),
        )
        put_slice(layer.data, prediction.slice_ref, values)
        layer.name = f"{prediction.model_name} {title} ({where})"
        layer.refresh()
    return labels
