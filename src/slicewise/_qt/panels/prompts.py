"""Box and point prompts with a promptable model (LiteMedSAM, SAM), and propagation through a stack.

"Draw boxes" adds a Shapes layer "<image> boxes" over the chosen image in rectangle mode. Every
rectangle on the viewed slice is a prompt: drawing, moving, resizing or deleting one decodes all
the boxes of that slice against the slice's cached embedding, and their union lands in the usual
proposal layer, where the edit panel accepts, merges or rejects it. "Place points" adds a Points
layer "<image> points": each click is an object (+, green) or background (−, red) point, as the
"click adds" choice says; the points of the viewed slice join its one box (or, with no box or
several, make a prompt of their own) for models that take points (SAM checkpoints); LiteMedSAM
was trained with boxes only and refuses them in one sentence. While the person prompts (the
image's boxes or points layer is shown and the prompt model takes that kind of prompt), the slice
they rest on is encoded ahead (``slicewise._qt.prefetch``), so the first box there costs only the
decode. "Propagate" follows the object on the viewed slice (the person's labels there, else the
proposal) to the next slices up and down, one proposal per slice, until it disappears.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.layers import Image, Points, Shapes
from napari.layers.base import ActionType
from napari.utils.notifications import show_info

from slicewise._qt.jobs import PromptRequest, prompt_job, propagate_job
from slicewise._qt.layers import show_prediction
from slicewise._qt.prefetch import PROMPT, PROPAGATE, Prefetch
from slicewise._qt.prompt_layers import (
    BOXES_KEY,
    POINT_COLOURS,
    POINTS_KEY,
    add_boxes,
    add_points,
    image_of,
    prompt_layer,
    prompts_on,
)
from slicewise._qt.runner import Job, JobRunner
from slicewise._qt.state import DockState
from slicewise.core.prompting import Prompt, describe_prompts
from slicewise.core.slices import take_slice
from slicewise.core.types import Prediction, SliceRef
from slicewise.errors import SlicewiseError
from slicewise.models.checkpoint import read_header
from slicewise.models.registry import get_adapter
from slicewise.models.sources import model_names

OBJECT, BACKGROUND = "object (+)", "background (−)"  # what a click adds
_SETTLED = (ActionType.ADDED, ActionType.REMOVED, ActionType.CHANGED)


class PromptPanel(Container):
    """Draw boxes for a promptable model; propagate an accepted object through the stack."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__()
        self._state, self._runner = state, runner
        self.prompt_model = ComboBox(label="prompt model", choices=self._prompt_models, value="lite_medsam")
        self.boxes_button = PushButton(text="Draw boxes", tooltip="each box on a slice prompts the model")
        self.points_button = PushButton(text="Place points", tooltip="clicks on the object (+) or the background (−)")
        self.point_kind = ComboBox(label="click adds", choices=[OBJECT, BACKGROUND], value=OBJECT)
        self.propagate_button = PushButton(
            text="Propagate", tooltip="follow the object on this slice to the next slices, one proposal each"
        )
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend([self.prompt_model, self.boxes_button, self.points_button, self.point_kind])
        self.extend([self.propagate_button, self.status])
        self._watched: list[Shapes | Points] = []  # boxes and points layers whose changes prompt this panel
        self.ahead = Prefetch(state, runner, self.prompt_model, self.status, self._prompting)
        self.boxes_button.changed.connect(self.draw_boxes)
        self.points_button.changed.connect(self.place_points)
        self.point_kind.changed.connect(self._point_kind_changed)
        self.propagate_button.changed.connect(self.propagate)
        self.prompt_model.changed.connect(self.ahead.request)
        state.events.opened_models.connect(lambda: self.prompt_model.reset_choices())
        state.events.image.connect(self.ahead.request)
        state.on_close(self._unwatch)

    @property
    def busy(self) -> bool:
        """Whether a prompt or a propagation runs."""
        return self._runner.running(PROMPT) or self._runner.running(PROPAGATE)

    def _prompt_models(self, _widget: ComboBox) -> list[str]:
        """lite_medsam, then the models opened in the dock (a SAM or MedSAM checkpoint, say)."""
        return [*model_names(promptable=True), *self._state.opened_models]

    def _unwatch(self) -> None:
        for layer in self._watched:
            layer.events.data.disconnect(self._on_prompts)
            layer.events.visible.disconnect(self.ahead.request)

    def boxes_layer(self, image: Image, *, create: bool = False) -> Shapes | None:
        """The boxes layer of ``image``, made now with ``create`` if there is none."""
        layer = prompt_layer(self._state.viewer, Shapes, BOXES_KEY, image)
        if layer is None and create:
            layer = add_boxes(self._state.viewer, image)
        return self._watch(layer)

    def _watch(self, layer: Shapes | Points | None) -> Any:
        if layer is not None and layer not in self._watched:  # also a layer an earlier dock made
            layer.events.data.connect(self._on_prompts)
            layer.events.visible.connect(self.ahead.request)  # shown again: prompting resumes
            self._watched.append(layer)
        return layer

    def points_layer(self, image: Image, *, create: bool = False) -> Points | None:
        """The points layer of ``image``, made now with ``create`` if there is none."""
        layer = prompt_layer(self._state.viewer, Points, POINTS_KEY, image)
        if layer is None and create:
            layer = add_points(self._state.viewer, image)
            self._point_kind_changed()
        return self._watch(layer)

    def place_points(self) -> None:
        """Add (or pick) the image's points layer in add mode: each click is a point of the kind chosen."""
        self._start_prompting("points are placed", self.points_layer, "add")

    def _start_prompting(self, what: str, layer_of: Any, mode: str) -> None:
        """Make the image's prompt layer the shown, active one in ``mode`` and encode the viewed slice ahead."""
        image = self._state.image
        if image is None:
            show_info(f"Choose an image in the slicewise widget first; {what} on it.")
            return
        layer = layer_of(image, create=True)
        layer.visible = True
        self._state.viewer.layers.selection.active = layer
        layer.mode = mode
        model = str(self.prompt_model.value)
        if self._prompt_kinds(model) == ():
            self.status.value = f"{model} takes no box or point prompts; choose lite_medsam or a SAM checkpoint."
        self.ahead.request()

    def _point_kind_changed(self, *_: Any) -> None:
        positive = self.point_kind.value == OBJECT
        image = self._state.image
        layer = None if image is None else self.points_layer(image)
        if layer is not None:
            layer.feature_defaults["positive"] = positive
            layer.selected_data = set()  # the new colour is for the next clicks only
            layer.current_face_color = POINT_COLOURS[positive]

    def draw_boxes(self) -> None:
        """Add (or pick) the image's boxes layer in rectangle mode and embed the viewed slice ahead."""
        self._start_prompting("boxes are drawn", self.boxes_layer, "add_rectangle")

    def _on_prompts(self, event: Any) -> None:
        """A box or point was added, moved, resized or deleted: prompt with every box and point on the viewed slice."""
        if event.action not in _SETTLED:
            return
        image = image_of(self._state.viewer, event.source)
        ref = None if image is None else self._state.viewed_slice(image)
        if ref is None:
            return
        prompts = prompts_on(self.boxes_layer(image), self.points_layer(image), ref)
        if prompts:
            self._request(image, prompts, ref)
        else:
            self.status.value = f"no boxes or points on {ref.describe()}; Reject removes the last proposal"

    def _prompt_kinds(self, model: str) -> tuple[str, ...] | None:
        """The prompts ``model`` takes ("box", "points"; () for none), known without loading it: a loaded
        model's adapter says, else a packaged model's name or a checkpoint's header names its
        architecture; None for a foreign file not loaded yet (its first prompt loads it)."""
        loaded = next((m for (name, *_), m in self._state.models.items() if name == model), None)
        if loaded is not None:
            adapter = loaded.adapter
        else:
            try:
                adapter = get_adapter(model if model in model_names(promptable=True) else read_header(model).spec.arch)
            except SlicewiseError:
                return None
        return adapter.prompt_kinds if adapter.supports_prompts else ()

    def _prompting(self, image: Image) -> str | None:
        """What the person prompts ``image`` with that the prompt model takes — "boxes" or "points", from
        the image's shown prompt layers — or None: only then is a slice worth encoding ahead."""
        kinds = self._prompt_kinds(str(self.prompt_model.value)) or ()
        layers = (("box", self.boxes_layer(image), "boxes"), ("points", self.points_layer(image), "points"))
        return next(
            (word for kind, layer, word in layers if kind in kinds and layer is not None and layer.visible), None
        )

    def _request(self, image: Image, prompts: tuple[Prompt, ...], ref: SliceRef) -> None:
        """Decode ``prompts``: the newest boxes win, and an encoding ahead of another slice stops for them."""
        request = PromptRequest(image, ref, str(self.prompt_model.value), self._state.device, prompts)
        self.ahead.stop_for(request)
        job = Job(
            work=prompt_job,
            args=(request, self._state.models),
            on_result=lambda result: self._on_result(request, result),
            on_failure=lambda failure: setattr(self.status, "value", failure.message),
            description=f"slicewise: prompting {ref.describe()}",
            interrupt=False,
            priority=1,
        )
        self._runner.submit(PROMPT, job)

    def _on_result(self, request: PromptRequest, result: Prediction) -> None:
        """Show the proposal; then encode ahead the slice the person moved to meanwhile."""
        image, ref = request.layer, request.slice_ref
        self.ahead.encoded(request)
        if image in self._state.viewer.layers:
            self._show(image, result)
            self.status.value = (
                f"{describe_prompts(request.prompts)} on {ref.describe()} · {result.seconds * 1000:.0f} ms"
            )
        self.ahead.request()

    def _show(self, image: Image, prediction: Prediction) -> None:
        if image in self._state.viewer.layers:
            self._state.proposal = show_prediction(self._state.viewer, image, prediction)

    def propagate(self) -> None:
        """Follow the object on the viewed slice through the stack (or stop a running propagation)."""
        if self._runner.cancel(PROPAGATE):
            return
        image = self._state.image
        ref = None if image is None else self._state.viewed_slice(image)
        if ref is None or len(ref.index) != 1:
            show_info("Propagation needs a 3D stack in the slicewise widget; it follows an object from slice to slice.")
            return
        mask = self._object_on(ref)
        if mask is None:
            show_info(f"There is no object on {ref.describe()}: accept a box proposal or paint one there first.")
            return
        request = PromptRequest(image, ref, str(self.prompt_model.value), self._state.device, mask=mask)
        job = Job(
            work=propagate_job,
            args=(request, self._state.models),
            on_yield=lambda prediction: self._show(image, prediction),
            on_result=lambda count: setattr(
                self.status,
                "value",
                f"propagated from {ref.describe()} to {count} more slices; accept each slice you keep",
            ),
            on_finished=lambda: setattr(self.propagate_button, "text", "Propagate"),
            description=f"slicewise: propagating from {ref.describe()}",
            total=image.data.shape[0] - 1,
        )
        self.propagate_button.text = "Stop propagating"
        self._runner.submit(PROPAGATE, job)

    def _object_on(self, ref: SliceRef) -> np.ndarray | None:
        """The person's labels on ``ref`` if they hold any, else the proposal there (as a mask)."""
        for layer in (self._state.target, self._state.proposal):
            if layer is not None and layer in self._state.viewer.layers:
                mask = take_slice(layer.data, ref) != 0
                if mask.any():
                    return mask
        return None
