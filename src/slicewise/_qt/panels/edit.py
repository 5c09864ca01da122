"""Accept, merge or reject a model's proposal into a person's labels: a model proposes, a person decides.

The proposal is the slicewise labels layer written last (the state's ``proposal``, else the topmost one), read at the
viewed slice. Nothing reaches the person's layer without an act: Accept, Accept class, Accept object
(``Shift-A``: the connected object under the mouse cursor) or Merge (unlabelled pixels only). Reject
clears the viewed slice's proposal and its maps (every slice, and the layers, with "every slice"
ticked, or once nothing is left); Undo reject puts them back. Pixels the person painted, or erased,
change only when "overwrite my pixels" is ticked. The labels to accept into are never chosen for the
person (an opened label file may be a reference): they choose, or press New labels layer. The legend
names each proposal with its colours, the one Accept takes first. Accept, Merge and Reject have keys.

Each act is one ``Labels.data_setitem`` call on the person's layer, so napari records it as one step of
its own history: Ctrl+Z (``layer.undo()``) takes it back, redo re-applies it, and napari's brush, fill
and eraser work and undo as they always do.

Provenance (who set each pixel) is kept by ``slicewise._qt.provenance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, SpinBox
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QSizePolicy

from slicewise._qt.layers import META_KEY, Rejection, add_quietly, is_output, legend, spatial_shape
from slicewise._qt.layers import reject as reject_proposal
from slicewise._qt.panels import row, show_choice
from slicewise._qt.provenance import ProvenanceTracker, track_provenance, tracker_of, trackers
from slicewise._qt.runner import JobRunner
from slicewise._qt.state import DockState
from slicewise.core import proposals
from slicewise.core.slices import slice_ref_from_point, take_slice
from slicewise.core.types import SliceRef

ACCEPT_OBJECT_KEY = "Shift-A"
ACCEPT_KEY, MERGE_KEY, REJECT_KEY = "Shift-Y", "Shift-M", "Shift-N"


class EditPanel(Container):
    """Accept, merge or reject the viewed slice's proposal into a person's Labels layer."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__()
        self._state = state
        self._viewer = state.viewer
        self._last_act = ""
        self._rejections: list[Rejection] = []
        # nullable, and None at first: an opened (reference) label file is never chosen for the person
        self.target = ComboBox(
            label="into labels",
            choices=self._person_layers,
            nullable=True,
            value=None,
            tooltip="the labels Accept writes into: choose yours, or press New labels layer",
        )
        self.new_button = PushButton(text="New labels layer")
        self.accept_button = PushButton(text="Accept", tooltip=f"the viewed slice's proposal ({ACCEPT_KEY})")
        self.merge_button = PushButton(text="Merge", tooltip=f"fill only unlabelled pixels ({MERGE_KEY})")
        self.reject_button = PushButton(
            text="Reject", tooltip=f"clear the viewed slice's proposal and maps; all with every slice ({REJECT_KEY})"
        )
        self.undo_reject_button = PushButton(text="Undo reject", enabled=False)
        self.legend = Label(value="", tooltip="each proposal's model and class colours; the one Accept takes first")
        self.legend.native.setWordWrap(True)
        self.legend.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.legend.native.setMinimumWidth(280)  # names of classes are long: give them the panel's width
        self.accept_class_button = PushButton(text="Accept class")
        self.accepted_class = SpinBox(value=1, min=1, max=255, tooltip="the proposal's class to accept")
        self.accept_object_button = PushButton(
            text=f"Accept object ({ACCEPT_OBJECT_KEY})", tooltip="the proposed object under the mouse cursor"
        )
        self.overwrite = CheckBox(text="overwrite my pixels", value=False)
        self.every_slice = CheckBox(
            text="every slice", value=False, tooltip="Accept, Accept class, Merge and Reject act on the whole stack"
        )
        self.status = Label(value="", tooltip="the last act; pixels of the chosen labels by who set them")
        self.status.native.setWordWrap(True)  # a long status must not widen the dock
        self.extend(
            [
                self.target,
                self.new_button,
                self.legend,
                row(self.accept_button, self.merge_button, self.reject_button, self.undo_reject_button),
                row(self.accept_class_button, self.accepted_class),
                self.accept_object_button,
                row(self.overwrite, self.every_slice),
                self.status,
            ]
        )
        self.new_button.changed.connect(self.new_labels)
        self.accept_button.changed.connect(self.accept)
        self.merge_button.changed.connect(self.merge)
        self.reject_button.changed.connect(self.reject)
        self.undo_reject_button.changed.connect(self.undo_reject)
        self.accept_class_button.changed.connect(self.accept_class)
        self.accept_object_button.changed.connect(self.accept_object)
        self.target.changed.connect(self._choose_target)
        state.events.target.connect(lambda layer: show_choice(self.target, layer))
        state.bind_key(ACCEPT_OBJECT_KEY, self.accept_object, "Accept the proposed object under the cursor")
        state.bind_key(ACCEPT_KEY, self.accept, "Accept the viewed slice's proposal")
        state.bind_key(MERGE_KEY, self.merge, "Merge the viewed slice's proposal")
        state.bind_key(REJECT_KEY, self.reject, "Reject the viewed slice's proposal")
        state.events.proposal.connect(self._show_legend)
        state.listen(self._viewer.layers.events.inserted, self._show_legend)
        state.listen(self._viewer.layers.events.removed, self._on_removed)
        state.on_close(self._let_trackers_go)
        if state.target is not None:
            show_choice(self.target, state.target)

    @property
    def proposal(self) -> Labels | None:
        """The proposal layer (the state's): what Accept and Merge take from."""
        return self._state.proposal

    @proposal.setter
    def proposal(self, layer: Labels | None) -> None:
        self._state.proposal = layer

    def _choose_target(self, layer: Labels | None) -> None:
        self._state.target = layer
        self._show_status()

    def _person_layers(self, _widget: ComboBox) -> list[tuple[str, Labels]]:
        return [
            (layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels) and not is_output(layer)
        ]

    def new_labels(self) -> None:
        """Add an empty Labels layer with the image's shape, scale and translate, and choose it."""
        image = self._state.image
        if image is None:
            show_info("Choose an image in the slicewise widget first; new labels take its shape.")
            return
        layer = self._viewer.add_labels(
            np.zeros(spatial_shape(image), np.uint8),
            name=f"{image.name} labels",
            scale=image.scale,
            translate=image.translate,
        )
        self.target.reset_choices()
        self.target.value = layer

    def accept(self) -> None:
        """Write the whole proposal of the viewed slice over every pixel the person did not paint."""
        self._act("accepted")

    def accept_class(self) -> None:
        """Write only the chosen class of the proposal."""
        self._act(f"accepted class {self.accepted_class.value}", classes=[int(self.accepted_class.value)])

    def accept_object(self) -> None:
        """Write only the proposed object under the mouse cursor (``Shift-A``)."""
        self._act("accepted the object", at_cursor=True)

    def merge(self) -> None:
        """Fill only the unlabelled pixels with the proposal."""
        self._act("merged", merge=True)

    def reject(self) -> None:
        """Clear the viewed slice's proposal and its maps (all of them with "every slice"); the person's labels stay."""
        proposal = self._proposal_layer()
        if proposal is None:
            show_info("There is no proposal to reject.")
            return
        whole = bool(self.every_slice.value) or proposal.data.ndim == 2
        point = proposal.world_to_data(self._viewer.dims.point)
        ref = None if whole else slice_ref_from_point(proposal.data.shape, point, rgb=False)
        name = proposal.name
        self._rejections.append(reject_proposal(self._viewer, proposal, ref))
        self.undo_reject_button.enabled = True
        if proposal not in self._viewer.layers:
            self.proposal = None
        self._last_act = f"rejected {name} on {'every slice' if ref is None else ref.describe()}"
        self._show_status()
        self._show_legend()

    def undo_reject(self) -> None:
        """Put back what the last Reject took."""
        if not self._rejections:
            return
        restored = self._rejections.pop().undo(self._viewer)
        self.undo_reject_button.enabled = bool(self._rejections)
        if restored is not None:
            self.proposal = restored
        self._last_act = "reject undone"
        self._show_status()
        self._show_legend()

    def _show_legend(self) -> None:
        self.legend.value = legend(self._viewer, self._proposal_layer())

    def _proposal_layer(self) -> Labels | None:
        """The labels layer the widget last wrote if it is still there, else the topmost slicewise one."""
        layers = self._viewer.layers
        if self.proposal is not None and self.proposal in layers:
            return self.proposal
        return next(
            (layer for layer in reversed(layers) if layer.metadata.get(META_KEY, {}).get("role") == "labels"), None
        )

    def _act(
        self, verb: str, *, classes: list[int] | None = None, at_cursor: bool = False, merge: bool = False
    ) -> None:
        """Check the act is possible (else one notification), then write its edit as one napari step."""
        proposal, person = self._proposal_layer(), self.target.value
        if proposal is None:
            show_info("There is no proposal for this slice; press Predict first.")
            return
        if person is None:
            show_info("Choose a labels layer to accept into, or press New labels layer.")
            return
        if person.data.shape != proposal.data.shape:
            show_error(
                f"'{person.name}' has shape {person.data.shape} but the proposal {proposal.data.shape}; "
                "choose labels of the image's shape or press New labels layer."
            )
            return
        whole = bool(self.every_slice.value) and not at_cursor
        point = proposal.world_to_data(self._viewer.dims.point)
        ref = SliceRef() if whole else slice_ref_from_point(proposal.data.shape, point, rgb=False)
        where = "every slice" if whole else ref.describe()
        planned = np.asarray(proposal.data) if whole else take_slice(proposal.data, ref)
        if not planned.any():
            show_info(f"The proposal is empty on {where}; {'propagate' if whole else 'predict this slice'} first.")
            return
        if classes is not None and not np.isin(planned, classes).any():
            show_info(f"The proposal has no class {classes[0]} on {where}.")
            return
        at = self._cursor_pixel(proposal, planned) if at_cursor else None
        if at_cursor and at is None:
            return
        tracker = self._tracker(person)
        if whole:
            labels, provenance = np.asarray(person.data), tracker.provenance
        else:
            labels, provenance = take_slice(person.data, ref), take_slice(tracker.provenance, ref)
        overwrite = bool(self.overwrite.value)
        try:
            if merge:
                edit = proposals.merge(labels, provenance, planned, overwrite_person=overwrite)
            else:
                edit = proposals.accept(
                    labels, provenance, planned, classes=classes, component_at=at, overwrite_person=overwrite
                )
        except ValueError as error:
            show_error(str(error))
            return
        leading = tuple(np.full(len(edit), i) for i in ref.index)
        with tracker.model_writes():
            person.data_setitem((*leading, *edit.coords), edit.new_labels)
        self._last_act = f"{verb}: {len(edit)} px on {where}"
        self._show_status()

    def _cursor_pixel(self, proposal: Labels, planned: np.ndarray) -> tuple[int, int] | None:
        """(row, col) of the mouse cursor in the proposal, or None (with a notification) if not on an object."""
        row, col = (int(round(c)) for c in proposal.world_to_data(self._viewer.cursor.position)[-2:])
        height, width = planned.shape
        if not (0 <= row < height and 0 <= col < width):
            show_info(f"The cursor is outside the proposal; point at an object and press {ACCEPT_OBJECT_KEY}.")
            return None
        if planned[row, col] == 0:
            show_info(f"There is no proposed object under the cursor; point at one and press {ACCEPT_OBJECT_KEY}.")
            return None
        return row, col

    def _tracker(self, labels: Labels) -> ProvenanceTracker:
        """The provenance tracker of a person's layer, made (with a new provenance layer) at the first act into it."""
        tracker = track_provenance(labels)
        if tracker.layer not in self._viewer.layers:
            add_quietly(self._viewer, tracker.layer)
        tracker.on_change = self._show_status
        return tracker

    def _show_status(self) -> None:
        """The last act and the chosen layer's pixel counts by provenance."""
        parts = [self._last_act] if self._last_act else []
        tracker = tracker_of(self.target.value)
        if tracker is not None:
            counts = proposals.provenance_counts(tracker.provenance)
            parts += [f"person {counts['person']} px", f"model {counts['model']} px"]
            if counts["erased"]:
                parts.append(f"erased by person {counts['erased']} px (kept empty)")
        self.status.value = " · ".join(parts)

    def _on_removed(self, event: Any) -> None:
        tracker = tracker_of(event.value)
        if tracker is not None:
            tracker.detach()
        if is_output(event.value):
            self._show_legend()

    def _let_trackers_go(self) -> None:
        """The dock closed: trackers go on following their layers, without telling this panel."""
        for tracker in trackers():
            if tracker.on_change == self._show_status:
                tracker.on_change = None
