"""The review queue in the viewer: rank a stack's slices worst first and visit them in turn.

Worst by the model's uncertainty (every slice is predicted), by its error against reference labels,
or by the disagreement between two models — the last two read the ``errors`` or ``disagreement``
layer the Evaluate section wrote, so ranking by them costs no prediction.
"""

from __future__ import annotations

import napari
from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info

from slicewise._qt.jobs import rank_job
from slicewise._qt.layers import META_KEY, show_prediction
from slicewise._qt.runner import Job, JobRunner
from slicewise._qt.state import DockState
from slicewise.core.review import ReviewQueue, rank_by_map, stack_refs
from slicewise.core.slices import slice_ref_from_point
from slicewise.core.types import Prediction, SliceRef
from slicewise.errors import SlicewiseError

NEXT_KEY = "Shift-U"
LANE = "rank"
UNCERTAINTY = "uncertainty"
MEASURES = {"errors": "1 − Dice against the reference", "disagreement": "1 − Dice between the models"}
CHOICES = {"errors": "error against reference", "disagreement": "disagreement between models"}


class ReviewPanel(Container):
    """Rank by (uncertainty, an errors layer, a disagreement layer), Rank, Next (``Shift-U``), status.

    Ranking by uncertainty runs in the runner's ``rank`` lane: a second click restarts it rather than
    starting a second worker on the same layers. The status always names the viewed slice's place.
    """

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__(labels=False)
        self._state, self._runner = state, runner
        self.rank_by = ComboBox(
            label="rank by",
            choices=self._rankings,
            tooltip="uncertainty predicts every slice; errors/disagreement layers come from Evaluate",
        )
        self.rank_button = PushButton(text="Rank slices")
        self.next_button = PushButton(text=f"Next slice to review ({NEXT_KEY})")
        self.queue_info = Label(value="")
        self.queue_info.native.setWordWrap(True)
        self.extend([self.rank_by, self.rank_button, self.next_button, self.queue_info])
        self.queue: ReviewQueue | None = None
        self.measure = UNCERTAINTY
        self._layer: napari.layers.Layer | None = None
        self.rank_button.changed.connect(self.rank)
        self.next_button.changed.connect(self.next_slice)
        state.bind_key(NEXT_KEY, self.next_slice)
        layers = state.viewer.layers.events
        for event in (layers.inserted, layers.removed):
            state.listen(event, lambda *_: self.rank_by.reset_choices())
        state.listen(state.viewer.dims.events.current_step, self._describe_viewed)

    def _rankings(self, _widget: ComboBox | None = None) -> list[tuple[str, Labels | str]]:
        """Uncertainty, then every errors and disagreement layer the Evaluate section wrote."""
        maps = []
        for layer in self._state.viewer.layers:
            identity = layer.metadata.get(META_KEY) or {}
            if (
                isinstance(layer, Labels) and identity.get("role") in CHOICES
            ):  # named stably: a re-evaluation renames it
                maps.append((f"{CHOICES[identity['role']]} ({identity.get('image', '')})", layer))
        return [(UNCERTAINTY, UNCERTAINTY), *maps]

    def rank(self) -> None:
        """Rank by the chosen measure: uncertainty predicts every slice in a worker; a map ranks at once."""
        chosen = self.rank_by.value
        if isinstance(chosen, Labels):
            self._rank_by_map(chosen)
            return
        request = self._state.request()
        if request is None:
            return
        layer = request.layer
        try:
            total = len(stack_refs(tuple(layer.data.shape), layer.rgb))
        except SlicewiseError as error:
            show_error(str(error))
            return
        job = Job(
            work=rank_job,
            args=(request, self._state.models),
            on_yield=lambda prediction: self._show(layer, prediction),
            on_result=lambda ranking: self._on_ranked(layer, ranking, UNCERTAINTY),
            on_failure=lambda failure: setattr(self.queue_info, "value", failure.message),
            description="slicewise: ranking slices",
            total=total,
        )
        self.queue, self.queue_info.value = None, f"ranking {total} slices by {request.model}'s uncertainty…"
        self._runner.submit(LANE, job)

    def _show(self, layer: napari.layers.Image, prediction: Prediction) -> None:
        if layer in self._state.viewer.layers:
            self._state.proposal = show_prediction(self._state.viewer, layer, prediction)
            self.queue_info.value = f"ranking: {prediction.slice_ref.describe()} predicted…"

    def _rank_by_map(self, layer: Labels) -> None:
        try:
            ranking = rank_by_map(layer.data)
        except SlicewiseError as error:
            show_error(str(error))
            return
        self._on_ranked(layer, ranking, layer.metadata[META_KEY]["role"])

    def _on_ranked(self, layer: napari.layers.Layer, ranking: list[tuple[SliceRef, float]], measure: str) -> None:
        self.queue, self._layer, self.measure = ReviewQueue(ranking), layer, measure
        self.next_slice()

    def next_slice(self) -> None:
        """Jump the viewer to the worst slice not yet reviewed."""
        viewer = self._state.viewer
        if self.queue is None or self._layer not in viewer.layers:
            show_info("Rank the slices of a stack first (Rank slices).")
            return
        item = self.queue.next()
        if item is None:
            self.queue_info.value = f"all {len(self.queue.ranking)} slices reviewed"
            return
        ref, _ = item
        layer = self._layer
        world = layer.data_to_world([ref.index[0]] + [0] * (layer.ndim - 1))
        viewer.dims.set_point(viewer.dims.ndim - layer.ndim, world[0])  # an RGB image's ndim has no colour axis
        self._describe_viewed()

    def _describe_viewed(self, *_: object) -> None:
        """Name the viewed slice and its place in the ranking (never an earlier slice's)."""
        layer = self._layer
        if self.queue is None or layer is None or layer not in self._state.viewer.layers:
            return
        rgb = getattr(layer, "rgb", False)
        ref = slice_ref_from_point(layer.data.shape, layer.world_to_data(self._state.viewer.dims.point), rgb)
        place = self.queue.place(ref)
        measure = MEASURES.get(self.measure, self.measure)
        where = "not ranked" if place is None else f"{measure} {place[1]:.3f}, {place[0]} of {len(self.queue.ranking)}"
        self.queue_info.value = f"{ref.describe()}: {where} · {self.queue.remaining} left"
