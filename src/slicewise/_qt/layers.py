"""Write predictions into slicewise's own napari layers, never into a person's layers.

Output layers are found by their ``metadata["slicewise"]`` key (image, model, role), so a
renamed or repeated prediction updates the same layer. One labels layer per model and image holds
every slice predicted so far; its short name says which (``polyp_unet labels`` in 2D,
``polyp_unet labels (slices 22, 33, 41)`` or ``(12 slices, 3–41)`` in a stack). Each model draws
its classes in its own colour family (``model_colours``), so two proposals on one slice can be
told apart; the dock shows the legend. Probability maps are added only when asked for, an
explanation's layer names its method (``polyp_unet occlusion of polyp``; methods keep their own
layers) and shows on arrival with contrast limits from its percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import napari
import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from slicewise.core.slices import put_slice, take_slice
from slicewise.core.types import Prediction, SliceRef

META_KEY = "slicewise"
INFO_KEY = "slicewise_info"  # of an output labels layer: its class names, colour family and predicted slices
DONE_KEY = "slicewise_done_slices"  # of a person's labels layer: the slices marked done for teach, painted or not


def done_slices(layer: napari.layers.Labels) -> list[int]:
    """The slices of a person's labels ``layer`` marked done in the Teach panel, in order."""
    return sorted(int(z) for z in layer.metadata.get(DONE_KEY, ()))


# colour families, one per model (class 1, 2, ... of a model take its family's colours in turn): bright
# colours that stand out on endoscopy, fundus, ultrasound and MR alike, and from each other
COLOUR_FAMILIES = (
    ("cyan", "dodgerblue", "aquamarine", "lightskyblue"),
    ("orange", "gold", "orangered", "khaki"),
    ("magenta", "violet", "hotpink", "plum"),
    ("lime", "yellowgreen", "springgreen", "palegreen"),
)
_FAMILIES: dict[str, int] = {}  # model name → its colour family, in the order models first predicted


def model_colours(model: str, num_classes: int) -> dict[int, str]:
    """The colour of each foreground class (1, 2, ...) of ``model``: its own family, the same every time."""
    family = COLOUR_FAMILIES[_FAMILIES.setdefault(model, len(_FAMILIES)) % len(COLOUR_FAMILIES)]
    return {k: family[(k - 1) % len(family)] for k in range(1, num_classes)}


def class_colormap(num_classes: int, model: str = "") -> DirectLabelColormap:
    """A fixed colour per class of ``model``, so its classes look the same in every layer it writes."""
    colours: dict[int | None, str] = {None: "transparent", 0: "transparent"}
    colours.update(model_colours(model, num_classes))
    return DirectLabelColormap(color_dict=colours)


def describe_slices(slices: list[int]) -> str:
    """Which slices a layer holds, short: `` (slice 4)``, `` (slices 2, 9)``, `` (12 slices, 3–41)``; 2D: ``""``."""
    if not slices:
        return ""
    if len(slices) == 1:
        return f" (slice {slices[0]})"
    if len(slices) <= 3:
        return f" (slices {', '.join(map(str, slices))})"
    return f" ({len(slices)} slices, {slices[0]}–{slices[-1]})"


def spatial_shape(layer: napari.layers.Image) -> tuple[int, ...]:
    """The layer's shape without its RGB(A) channel axis."""
    return tuple(layer.data.shape[:-1] if layer.rgb else layer.data.shape)


def is_output(layer: napari.layers.Layer) -> bool:
    """Whether slicewise made this layer (so it may be overwritten by a new prediction)."""
    return META_KEY in layer.metadata


def add_quietly(viewer: napari.Viewer, layer: napari.layers.Layer) -> napari.layers.Layer:
    """Add ``layer`` without making it the active (selected) one: the person's layer keeps its tool.

    napari selects every layer it adds; a hidden, read-only layer (provenance) or an output layer
    that became active would take the person's brush, eraser and Ctrl+Z away from their labels.
    """
    active = viewer.layers.selection.active
    selected = set(viewer.layers.selection)
    viewer.add_layer(layer)
    viewer.layers.selection.clear()
    viewer.layers.selection.update(selected)
    viewer.layers.selection.active = active
    return layer


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
    return add_quietly(viewer, layer)  # a new output layer must not take the person's tool (brush, box) away


def show_prediction(
    viewer: napari.Viewer,
    image: napari.layers.Image,
    prediction: Prediction,
    *,
    probabilities: bool = True,
    explain_method: str = "explanation",
) -> napari.layers.Labels:
    """Write one slice's labels, probabilities, uncertainty and explanation into their own layers.

    probabilities: whether to write the P(class) maps (the dock's predict panel asks only when the
    person ticks them). Probability and uncertainty layers start hidden (float images in [0, 1]); the
    labels show, and so does an explanation (it was asked for), under the name of its method.
    """
    shape = spatial_shape(image)
    geometry = {"scale": image.scale, "translate": image.translate}
    identity = {"image": image.name, "model": prediction.model_name}

    labels = _find_or_add(
        viewer,
        image,
        {**identity, "role": "labels"},
        lambda: napari.layers.Labels(
            np.zeros(shape, dtype=np.uint8),
            opacity=0.45,
            colormap=class_colormap(len(prediction.class_names), prediction.model_name),
            **geometry,
        ),
    )
    put_slice(labels.data, prediction.slice_ref, prediction.labels)
    info = labels.metadata.setdefault(INFO_KEY, {"slices": []})
    info["classes"] = list(prediction.class_names)
    if prediction.slice_ref.index:
        info["slices"] = sorted({*info["slices"], prediction.slice_ref.index[0]})
    _name_labels(labels)
    labels.refresh(extent=False)  # the data changed in place; its shape (the extent) did not

    maps = []
    if probabilities:
        maps += [
            (f"probability:{name}", f"P({name})", prediction.probabilities[k], "inferno")
            for k, name in enumerate(prediction.class_names[1:], start=1)
        ]
    if prediction.uncertainty is not None:
        maps.append(("uncertainty", "uncertainty", prediction.uncertainty, "magma"))
    if prediction.explanation is not None:
        explained = prediction.class_names[prediction.target_class]
        title = f"{explain_method} of {explained}"
        maps.append((f"explanation:{explain_method}", title, prediction.explanation, "hot"))
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
        layer.name = f"{prediction.model_name} {title}"
        if role.startswith("explanation"):
            # saliency is faint at (0, 1): the limits follow the map's own percentiles, and it shows (it was asked for)
            low, high = (float(v) for v in np.percentile(values, (1.0, 99.5)))
            layer.contrast_limits = (low, high) if high > low else (0.0, 1.0)
            layer.visible = True
        layer.refresh(extent=False)  # napari skips a hidden layer's refresh (it refreshes when shown)
    return labels


def _name_labels(labels: napari.layers.Labels, add: int | None = None, drop: int | None = None) -> None:
    """Name an output labels layer after its model and the slices it holds (adding or dropping one)."""
    info = labels.metadata.setdefault(INFO_KEY, {"slices": []})
    slices = {*info.get("slices", []), *([] if add is None else [add])} - {drop}
    info["slices"] = sorted(slices)
    labels.name = f"{labels.metadata[META_KEY]['model']} labels{describe_slices(info['slices'])}"


def outputs_of(viewer: napari.Viewer, proposal: napari.layers.Labels) -> list[napari.layers.Layer]:
    """Every layer written with a proposal: its labels and its probability, uncertainty and explanation maps."""
    identity = proposal.metadata.get(META_KEY, {})
    same = {key: identity.get(key) for key in ("image", "model")}
    return [
        layer
        for layer in viewer.layers
        if is_output(layer)
        and {key: layer.metadata[META_KEY].get(key) for key in same} == same
        and layer.metadata[META_KEY].get("role") not in ("provenance", "reference")
    ]


@dataclass(eq=False)
class Rejection:
    """What one Reject took away, so that it can be undone: the slice's values, or whole layers.

    ``slices``: (layer, the rejected slice's values) of each layer cleared there; ``removed``: (layer,
    its index in the layer list) of each layer removed (every slice rejected, or nothing left).
    """

    ref: SliceRef | None
    slices: list[tuple[napari.layers.Layer, np.ndarray]] = field(default_factory=list)
    removed: list[tuple[napari.layers.Layer, int]] = field(default_factory=list)

    def undo(self, viewer: napari.Viewer) -> napari.layers.Labels | None:
        """Put back what the Reject took; the proposal labels layer it restored (or None)."""
        for layer, index in sorted(self.removed, key=lambda pair: pair[1]):
            if layer not in viewer.layers:
                add_quietly(viewer, layer)
                viewer.layers.move(viewer.layers.index(layer), min(index, len(viewer.layers) - 1))
        for layer, values in self.slices:
            if self.ref is not None:
                put_slice(layer.data, self.ref, values)
                if layer.metadata[META_KEY].get("role") == "labels":
                    _name_labels(layer, add=self.ref.index[0])
            layer.refresh()
        layers = [layer for layer, _ in self.removed] + [layer for layer, _ in self.slices]
        return next((layer for layer in layers if layer.metadata[META_KEY].get("role") == "labels"), None)


def reject(viewer: napari.Viewer, proposal: napari.layers.Labels, ref: SliceRef | None) -> Rejection:
    """Clear ``proposal`` and its maps on slice ``ref`` (None: remove them all); what was taken, for undo.

    A proposal with nothing left on any slice goes with its maps.
    """
    layers = outputs_of(viewer, proposal)
    rejection = Rejection(ref)
    if ref is not None and ref.index:
        for layer in layers:
            rejection.slices.append((layer, np.array(take_slice(layer.data, ref), copy=True)))
            put_slice(layer.data, ref, np.zeros_like(rejection.slices[-1][1]))
            layer.refresh()
        _name_labels(proposal, drop=ref.index[0])
        if np.asarray(proposal.data).any():
            return rejection
    for layer in layers:
        rejection.removed.append((layer, viewer.layers.index(layer)))
    for layer, _ in rejection.removed:
        viewer.layers.remove(layer)
    return rejection


def legend(viewer: napari.Viewer, chosen: napari.layers.Labels | None) -> str:
    """Rich text for the dock: each proposal's model with its classes in their colours; the one Accept takes first."""
    lines = []
    for layer in viewer.layers:
        identity = layer.metadata.get(META_KEY, {})
        if identity.get("role") != "labels" or "model" not in identity:
            continue
        names = layer.metadata.get(INFO_KEY, {}).get("classes", [])
        colours = model_colours(identity["model"], len(names))
        swatches = " ".join(f'<span style="color:{colours[k]}">&#9632;</span> {names[k]}' for k in colours)
        line = f"{identity['model']}: {swatches}"
        if layer is chosen:
            lines.insert(0, f"<b>Accept takes {line}</b>")
        else:
            lines.append(line)
    return "<br>".join(lines)
