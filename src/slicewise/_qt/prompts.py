"""Box prompts with a promptable model (LiteMedSAM), and propagation of an object through a stack.

"Draw boxes" adds a Shapes layer "<image> boxes" over the chosen image in rectangle mode. Every
rectangle on the viewed slice is a prompt: drawing, moving, resizing or deleting one decodes all
the boxes of that slice against the slice's cached embedding, and their union lands in the usual
proposal layer, where the edit panel accepts, merges or rejects it. While the boxes layer exists,
the encoder runs ahead on each slice the person moves to, so the first box there costs only the
decode. "Propagate" follows the object on the viewed slice (the person's labels there, else the
proposal) to the next slices up and down, one proposal per slice, until it disappears.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.layers import Image, Shapes
from napari.layers.base import ActionType
from napari.qt.threading import GeneratorWorker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from slicewise._qt.jobs import Failure, PromptRequest, prompt_job, propagate_job
from slicewise._qt.layers import show_prediction, spatial_shape
from slicewise.core.prompting import Prompt
from slicewise.core.slices import slice_ref_from_point, take_slice
from slicewise.core.types import Prediction, SliceRef
from slicewise.errors import SlicewiseError
from slicewise.models.packaged import packaged_models

if TYPE_CHECKING:
    from slicewise._qt.widget import PredictWidget

BOXES_KEY = "slicewise_boxes"  # metadata of a boxes layer: the name of the image it prompts
_SETTLED = (ActionType.ADDED, ActionType.REMOVED, ActionType.CHANGED)


def boxes_on(layer: Shapes, ref: SliceRef) -> tuple[Prompt, ...]:
    """The rectangles of ``layer`` lying on slice ``ref``, as box prompts in slice pixels."""
    prompts = []
    for shape_type, vertices in zip(layer.shape_type, layer.data, strict=True):
        leading = tuple(int(round(v)) for v in vertices[0, :-2])
        if shape_type == "rectangle" and leading == ref.index:
            rows, cols = vertices[:, -2], vertices[:, -1]
            prompts.append(Prompt(box=(cols.min(), rows.min(), cols.max(), rows.max())))
    return tuple(prompts)


class PromptPanel(Container):
    """Draw boxes for a promptable model; propagate an accepted object through the stack."""

    def __init__(self, viewer: napari.viewer.Viewer, predictor: PredictWidget) -> None:
        super().__init__()
        self._viewer = viewer
        self._predictor = predictor
        self.prompt_model = ComboBox(label="prompt model", choices=self._prompt_models, value="lite_medsam")
        self.boxes_button = PushButton(text="Draw boxes", tooltip="each box on a slice prompts the model")
        self.propagate_button = PushButton(
            text="Propagate", tooltip="follow the object on this slice to the next slices, one proposal each"
        )
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend([self.prompt_model, self.boxes_button, self.propagate_button, self.status])
        self._worker: GeneratorWorker | None = None
        self._pending: PromptRequest | None = None
        self._propagation: GeneratorWorker | None = None
        self._watched: list[Shapes] = []  # boxes layers whose changes prompt this panel
        self._closed = False
        self._ahead_refused: set[str] = set()  # models that answered an embed-ahead with a failure
        self.boxes_button.changed.connect(self.draw_boxes)
        self.propagate_button.changed.connect(self.propagate)
        viewer.dims.events.current_step.connect(self._embed_ahead)
        self.native.destroyed.connect(self._shutdown)

    def _prompt_models(self, _widget: ComboBox) -> list[str]:
        """lite_medsam, then the models opened in the widget (a SAM or MedSAM checkpoint, say)."""
        return [*packaged_models(), *self._predictor.opened_models]

    def _shutdown(self) -> None:
        """The dock widget closed: stop listening to the viewer and its boxes layers, drop running work."""
        self._closed = True
        self._pending = None
        self._viewer.dims.events.current_step.disconnect(self._embed_ahead)
        for layer in self._watched:
            layer.events.data.disconnect(self._on_boxes)
        for worker in (self._worker, self._propagation):
            if worker is not None:
                worker.quit()

    def boxes_layer(self, image: Image, *, create: bool = False) -> Shapes | None:
        """The boxes layer of ``image``, made now with ``create`` if there is none."""
        shapes = [lay for lay in self._viewer.layers if isinstance(lay, Shapes)]
        layer = next((lay for lay in shapes if lay.metadata.get(BOXES_KEY) == image.name), None)
        if layer is None and create:
            layer = self._viewer.add_shapes(
                ndim=len(spatial_shape(image)),
                name=f"{image.name} boxes",
                scale=image.scale,
                translate=image.translate,
                edge_color="yellow",
                face_color="transparent",
                edge_width=2,
                metadata={BOXES_KEY: image.name},
            )
        if layer is not None and layer not in self._watched:  # also a boxes layer an earlier widget made
            layer.events.data.connect(self._on_boxes)
            self._watched.append(layer)
        return layer

    def draw_boxes(self) -> None:
        """Add (or pick) the image's boxes layer in rectangle mode and embed the viewed slice ahead."""
        image = self._predictor.image.value
        if image is None:
            show_info("Choose an image in the slicewise widget first; boxes are drawn on it.")
            return
        layer = self.boxes_layer(image, create=True)
        self._viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        self._request(image, ())

    def _viewed_slice(self, image: Image) -> SliceRef | None:
        try:
            return slice_ref_from_point(image.data.shape, image.world_to_data(self._viewer.dims.point), image.rgb)
        except SlicewiseError as error:
            show_error(str(error))
            return None

    def _image_of(self, layer: Shapes) -> Image | None:
        return next(
            (lay for lay in self._viewer.layers if isinstance(lay, Image) and lay.name == layer.metadata[BOXES_KEY]),
            None,
        )

    def _on_boxes(self, event: Any) -> None:
        """A box was drawn, moved, resized or deleted: prompt with every box on the viewed slice."""
        if event.action not in _SETTLED:
            return
        image = self._image_of(event.source)
        ref = None if image is None else self._viewed_slice(image)
        if ref is None:
            return
        prompts = boxes_on(event.source, ref)
        if prompts:
            self._request(image, prompts, ref)
        else:
            self.status.value = f"no boxes on {ref.describe()}; Reject removes the last proposal"

    def _embed_ahead(self) -> None:
        """The person moved to another slice while prompting: run the encoder there now."""
        image = self._predictor.image.value
        if str(self.prompt_model.value) in self._ahead_refused or self._propagation is not None:
            return
        if image is not None and self.boxes_layer(image) is not None:
            self._request(image, ())

    def _request(self, image: Image, prompts: tuple[Prompt, ...], ref: SliceRef | None = None) -> None:
        ref = ref or self._viewed_slice(image)
        if ref is None:
            return
        request = PromptRequest(image, ref, str(self.prompt_model.value), str(self._predictor.device.value), prompts)
        if self._worker is None:
            self._start(request)
        elif prompts or self._pending is None or not self._pending.prompts:
            self._pending = request  # the newest boxes win; an embedding never displaces waiting boxes

    def _start(self, request: PromptRequest) -> None:
        worker = prompt_job(request, self._predictor.models)
        worker.returned.connect(lambda result: self._on_result(request, result))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        if not request.prompts:
            self.status.value = f"encoding {request.slice_ref.describe()} ahead of the first box…"
        worker.start()

    def _on_finished(self) -> None:
        self._worker = None
        if self._pending is not None and not self._closed:
            request, self._pending = self._pending, None
            self._start(request)

    def _on_result(self, request: PromptRequest, result: Prediction | Failure | None) -> None:
        if self._closed:
            return
        if isinstance(result, Failure):
            show_error(result.message)
            self.status.value = result.message
            if not request.prompts:  # no more encoding ahead with this model: one notification is enough
                self._ahead_refused.add(request.model)
        elif result is None:
            self.status.value = f"{request.slice_ref.describe()} encoded: a box there costs only the decoder"
        elif request.layer in self._viewer.layers:
            self._show(request.layer, result)
            boxes = f"{len(request.prompts)} box{'es' if len(request.prompts) > 1 else ''}"
            self.status.value = f"{boxes} on {request.slice_ref.describe()} · {result.seconds * 1000:.0f} ms"

    def _show(self, image: Image, prediction: Prediction) -> None:
        self._predictor.edit.proposal = show_prediction(self._viewer, image, prediction)

    def propagate(self) -> None:
        """Follow the object on the viewed slice through the stack (or stop a running propagation)."""
        if self._propagation is not None:
            self._propagation.quit()
            return
        image = self._predictor.image.value
        ref = None if image is None else self._viewed_slice(image)
        if ref is None or len(ref.index) != 1:
            show_info("Propagation needs a 3D stack in the slicewise widget; it follows an object from slice to slice.")
            return
        mask = self._object_on(ref)
        if mask is None:
            show_info(f"There is no object on {ref.describe()}: accept a box proposal or paint one there first.")
            return
        request = PromptRequest(image, ref, str(self.prompt_model.value), str(self._predictor.device.value), mask=mask)
        bar = progress(total=image.data.shape[0] - 1, desc=f"slicewise: propagating from {ref.describe()}")
        worker = propagate_job(request, self._predictor.models)
        worker.yielded.connect(lambda prediction: self._show_propagated(image, prediction, bar))
        worker.returned.connect(lambda result: self._on_propagated(ref, result))
        worker.finished.connect(bar.close)
        worker.finished.connect(self._on_propagation_finished)
        self._propagation = worker
        self.propagate_button.text = "Stop propagating"
        worker.start()

    def _object_on(self, ref: SliceRef) -> np.ndarray | None:
        """The person's labels on ``ref`` if they hold any, else the proposal there (as a mask)."""
        for layer in (self._predictor.edit.target.value, self._predictor.edit.proposal):
            if layer is not None and layer in self._viewer.layers:
                mask = take_slice(layer.data, ref) != 0
                if mask.any():
                    return mask
        return None

    def _show_propagated(self, image: Image, prediction: Prediction, bar: progress) -> None:
        if not self._closed and image in self._viewer.layers:
            self._show(image, prediction)
        bar.set_description(f"slicewise: proposed {prediction.slice_ref.describe()}")
        bar.update(1)

    def _on_propagated(self, start: SliceRef, result: int | Failure) -> None:
        if self._closed:
            return
        if isinstance(result, Failure):
            show_error(result.message)
            return
        self.status.value = f"propagated from {start.describe()} to {result} more slices; accept each slice you keep"

    def _on_propagation_finished(self) -> None:
        self._propagation = None
        if not self._closed:
            self.propagate_button.text = "Propagate"
