"""Teach a new task from the slices a person labelled, propose, and point at the next slice to label.

The panel reads controls and the viewer, starts its jobs (``teach_jobs.py``: ``slicewise.core.teach``
and ``slicewise.core.interpolate``) in the runner's ``"teach"`` lane and writes their proposals into
slicewise's own layers (``show_prediction``), where the edit panel accepts, merges or rejects them
with undo. *Fill between* proposes the slices between labelled ones from their shapes alone, with no
model. The person's labels are only read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info

from slicewise._qt.jobs import PERSON_ERRORS
from slicewise._qt.layers import DONE_KEY, describe_slices, done_slices, is_output, show_prediction, spatial_shape
from slicewise._qt.panels import row
from slicewise._qt.panels.teach_jobs import fill_job, labelled_slices, next_slice_job, propose_job, teach_job
from slicewise._qt.runner import Job, JobRunner
from slicewise._qt.state import OTHER_PLANE, DockState
from slicewise.api import save_model
from slicewise.core.teach import MODES, TeachOptions
from slicewise.core.types import SliceRef
from slicewise.models.encoders import available_encoders
from slicewise.models.loaded import LoadedModel

LANE = "teach"
COMPLETE, STROKES = "complete slices", "strokes"
HOW = {
    COMPLETE: "complete slices: every pixel of a labelled slice counts, 0 = background",
    STROKES: "strokes: 0 = not labelled, 1 = background, 2, 3… = your classes",
}


class TeachPanel(Container):
    """Labels to learn from, encoder, mode, how the labels are painted; Teach, Propose, Mark done, Fill
    between, Next slice, Save."""

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__()
        self._state, self._runner = state, runner
        self.model: LoadedModel | None = None
        self._report = ""  # the last round's line, which what the proposals found is added to
        self.teach_from = ComboBox(label="teach from", choices=self._person_layers, tooltip="your labels layer")
        self.encoder = ComboBox(label="encoder", choices=["auto", *available_encoders()], value="auto")
        self.mode = ComboBox(label="mode", choices=list(MODES), value="head")
        self.painted = ComboBox(label="labels are", choices=[COMPLETE, STROKES], value=COMPLETE)
        self.how = Label(value=HOW[COMPLETE])
        self.teach_button = PushButton(text="Teach")
        self.propose_button = PushButton(text="Propose slice")
        self.propose_all_button = PushButton(text="Propose all")
        self.propose_all_button.tooltip = "every slice you have not painted or marked done"
        self.next_button = PushButton(text="Next slice to label")
        self.done_button = PushButton(text="Mark slice done")
        self.done_button.tooltip = "teach from the viewed slice even where nothing is painted: there it is background"
        self.fill_button = PushButton(text="Fill between")
        self.fill_button.tooltip = "propose each slice between two labelled ones from their shapes, with no model"
        self.save_path = FileEdit(label="save as", mode="w", filter="*.safetensors")
        self.save_button = PushButton(text="Save model")
        self.status = Label(label="taught", value="nothing yet")
        for label in (self.how, self.status):
            label.native.setWordWrap(True)  # the report and the convention are sentences
        self.extend([self.teach_from, self.encoder, self.mode, self.painted, self.how])
        self.extend([row(self.teach_button, self.propose_button, self.propose_all_button)])
        self.extend([row(self.done_button, self.fill_button, self.next_button)])
        self.extend([self.save_path, self.save_button, self.status])

        self.painted.changed.connect(lambda how: setattr(self.how, "value", HOW[how]))
        self.teach_button.changed.connect(self.teach)
        self.propose_button.changed.connect(lambda: self.propose(every_slice=False))
        self.propose_all_button.changed.connect(lambda: self.propose(every_slice=True))
        self.next_button.changed.connect(self.next_slice)
        self.done_button.changed.connect(self.mark_done)
        self.fill_button.changed.connect(self.fill)
        self.save_button.changed.connect(self.save)
        state.listen(state.viewer.layers.events.inserted, lambda _event: self.teach_from.reset_choices())
        state.listen(state.viewer.layers.events.removed, lambda _event: self.teach_from.reset_choices())

    def _person_layers(self, _widget: ComboBox) -> list[tuple[str, Labels]]:
        layers = self._state.viewer.layers
        return [(layer.name, layer) for layer in layers if isinstance(layer, Labels) and not is_output(layer)]

    def _inputs(self) -> tuple[Image, Labels] | None:
        image, labels = self._state.image, self.teach_from.value
        if image is None or labels is None:
            show_error("Choose the image, and make or open a labels layer and paint a few slices, then press Teach.")
            return None
        if not self._state.shows_slices(image):  # a plane painted across the slices is no complete slice
            show_error(OTHER_PLANE)
            return None
        return image, labels

    def teach(self) -> None:
        """Teach in a worker from the labelled slices; the model then proposes on the viewed slice."""
        inputs = self._inputs()
        if inputs is None:
            return
        options = TeachOptions(
            encoder=str(self.encoder.value), mode=str(self.mode.value), strokes=self.painted.value == STROKES
        )
        self.status.value = "teaching…"
        self._runner.submit(
            LANE,
            Job(
                work=teach_job,
                args=(*inputs, options, self.model),
                on_result=self._taught,
                description="slicewise teach",
            ),
        )

    def _taught(self, result: tuple[LoadedModel, Any]) -> None:
        self.model, report = result
        self._report = self.status.value = report.describe()
        show_info(report.describe())
        self.propose(every_slice=False)

    def propose(self, *, every_slice: bool) -> None:
        """Proposals of the taught model on the viewed slice, or on every slice but those labelled
        completely or marked done (the person has decided those), in slicewise's layers."""
        image = self._state.image
        if self.model is None or image is None:
            show_error("Teach a model first (paint a few slices, then press Teach).")
            return
        viewed = self._state.viewed_slice(image)
        if viewed is None:
            return
        refs = [viewed]
        if every_slice and viewed.index:
            labels, decided = self.teach_from.value, set()
            if labels is not None and self.painted.value == COMPLETE and labels.data.shape == spatial_shape(image):
                decided = set(labelled_slices(labels)[1])
            refs = [SliceRef((z,)) for z in range(image.data.shape[0]) if z not in decided]
            if not refs:
                show_info("Every slice is labelled or marked done: there is nothing left to propose.")
                return
        job = Job(
            work=propose_job,
            args=(self.model, image, refs),
            on_yield=lambda prediction: self._show(image, prediction),
            on_result=lambda found: self._proposed(refs, found),
            total=len(refs),
            description="slicewise proposals",
        )
        self._runner.submit(LANE, job)

    def _proposed(self, refs: list[SliceRef], found: list[bool]) -> None:
        """Say after the round's line what the proposals found: an empty proposal is otherwise invisible."""
        where = [ref.index[0] if ref.index else 0 for ref, any_object in zip(refs, found, strict=True) if any_object]
        if len(refs) > 1:
            line = f"Objects proposed on {len(where)} of the {len(refs)} slices left to label{describe_slices(where)}."
        elif where:
            line = f"A proposal on {f'slice {refs[0].index[0]}' if refs[0].index else 'this image'}."
        elif refs[0].index:
            line = (
                f"Nothing proposed on slice {refs[0].index[0]}: label a slice showing the object, or use Fill between."
            )
        else:
            line = "Nothing proposed on this image: label another image showing the object and teach again."
        # one wrapped paragraph: a line break would make the label ask for the width of its longest line
        self.status.value = f"{self._report.rstrip('.')}. {line}" if self._report else line

    def _show(self, image: Image, prediction: Any, *, probabilities: bool = True) -> None:
        if image in self._state.viewer.layers:
            self._state.proposal = show_prediction(self._state.viewer, image, prediction, probabilities=probabilities)

    def mark_done(self) -> None:
        """Mark the viewed slice done (or no longer done): a done slice teaches as background
        wherever nothing is painted on it, so a slice without the object can say so."""
        inputs = self._inputs()
        if inputs is None:
            return
        if self.painted.value == STROKES:
            show_error("With strokes, paint background (label 1) on a slice without the object; it needs no marking.")
            return
        image, labels = inputs
        viewed = self._state.viewed_slice(image)
        if viewed is None:
            return
        index = viewed.index[0] if viewed.index else 0
        done = set(done_slices(labels))
        done.symmetric_difference_update({index})
        labels.metadata[DONE_KEY] = sorted(done)
        marked = f" (done: {', '.join(map(str, sorted(done)))})" if done else ""
        self.status.value = (
            f"slice {index} is done{marked}: it teaches as background wherever nothing is painted"
            if index in done
            else f"slice {index} is no longer done{marked}"
        )

    def fill(self) -> None:
        """Propose the slices between labelled ones by interpolating their shapes (no model needed)."""
        inputs = self._inputs()
        if inputs is None:
            return
        if self.painted.value == STROKES:
            show_error("Filling between slices needs complete slices; strokes leave the shapes unknown.")
            return
        image, labels = inputs
        if image.data.ndim - int(image.rgb) < 3:
            show_error("The image is a single slice; there are no slices to fill between.")
            return
        if spatial_shape(image) != labels.data.shape:
            show_error("The labels layer must have the image's shape to fill between its slices.")
            return
        self._runner.submit(
            LANE,
            Job(
                work=fill_job,
                args=(labels,),
                on_yield=lambda prediction: self._show(image, prediction, probabilities=False),
                on_result=self._filled,
                description="slicewise fill between",
            ),
        )

    def _filled(self, slices: list[int]) -> None:
        self.status.value = (
            f"filled between your labelled slices{describe_slices(slices)}: accept, merge or reject as any proposal"
        )

    def next_slice(self) -> None:
        """Move the viewer to the unlabelled slice the taught model is least sure about."""
        inputs = self._inputs()
        if inputs is None or self.model is None:
            if inputs is not None:
                show_error("Teach a model first: the next slice is the one it is least sure about.")
            return
        image, labels = inputs
        if image.data.ndim - int(image.rgb) < 3:
            show_error("The image is a single slice; there is no other slice to label.")
            return
        labelled = labelled_slices(labels, strokes=self.painted.value == STROKES)[1]
        self._runner.submit(
            LANE,
            Job(
                work=next_slice_job,
                args=(self.model, image, labelled),
                on_result=self._go_to,
                description="slicewise rank",
            ),
        )

    def _go_to(self, index: int | None) -> None:
        if index is None:
            show_info("Every slice is labelled.")
            return
        self._state.viewer.dims.set_current_step(0, index)
        self.status.value = f"label slice {index} next: the taught model is least sure there"

    def save(self) -> None:
        """Write the taught model as a slicewise checkpoint and offer it as a model in the dock."""
        path = Path(str(self.save_path.value))
        if self.model is None or str(self.save_path.value) in ("", "."):
            show_error("Teach a model and choose a file to save it to first.")
            return
        try:
            saved = save_model(self.model, path.with_suffix(".safetensors"))
        except (OSError, *PERSON_ERRORS) as error:
            show_error(f"Could not save the model to {path}: {error}")
            return
        self._state.open_model(str(saved))
        self.status.value = f"saved {saved.name}"
