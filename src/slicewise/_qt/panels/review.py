"""The review queue in the viewer: rank a stack's slices by uncertainty, visit the worst first."""

from __future__ import annotations

import napari
from magicgui.widgets import Container, Label, PushButton
from napari.utils.notifications import show_error, show_info

from slicewise._qt.jobs import rank_job
from slicewise._qt.layers import show_prediction, spatial_shape
from slicewise._qt.runner import Job, JobRunner
from slicewise._qt.state import DockState
from slicewise.core.review import ReviewQueue, stack_refs
from slicewise.core.types import SliceRef
from slicewise.errors import SlicewiseError

NEXT_KEY = "Shift-U"
LANE = "rank"


class ReviewPanel(Container):
    """Buttons (and ``Shift-U``) that send the annotator to the least certain unreviewed slice.

    Ranking runs in the runner's ``rank`` lane: a second click restarts it rather than starting a
    second worker on the same layers.
    """

    def __init__(self, state: DockState, runner: JobRunner) -> None:
        super().__init__(labels=False)
        self._state, self._runner = state, runner
        self.rank_button = PushButton(text="Rank slices by uncertainty")
        self.next_button = PushButton(text=f"Next uncertain slice ({NEXT_KEY})")
        self.queue_info = Label(value="")
        self.extend([self.rank_button, self.next_button, self.queue_info])
        self.queue: ReviewQueue | None = None
        self._layer: napari.layers.Image | None = None
        self.rank_button.changed.connect(self.rank)
        self.next_button.changed.connect(self.next_slice)
        state.bind_key(NEXT_KEY, self.next_slice)

    def rank(self) -> None:
        """Predict every slice with uncertainty in a worker, showing each as it comes."""
        request = self._state.request()
        if request is None:
            return
        layer = request.layer
        try:
            total = len(stack_refs(tuple(layer.data.shape), layer.rgb))
        except SlicewiseError as error:
            show_error(str(error))
            return
        viewer = self._state.viewer
        job = Job(
            work=rank_job,
            args=(request, self._state.models),
            on_yield=lambda prediction: layer in viewer.layers and show_prediction(viewer, layer, prediction),
            on_result=lambda ranking: self._on_ranked(layer, ranking),
            description="slicewise: ranking slices",
            total=total,
        )
        self.queue_info.value = f"ranking {total} slices…"
        self._runner.submit(LANE, job)

    def _on_ranked(self, layer: napari.layers.Image, ranking: list[tuple[SliceRef, float]]) -> None:
        self.queue, self._layer = ReviewQueue(ranking), layer
        self.next_slice()

    def next_slice(self) -> None:
        """Jump the viewer to the most uncertain slice not yet reviewed."""
        viewer = self._state.viewer
        if self.queue is None or self._layer not in viewer.layers:
            show_info("Rank the slices of a stack first (Rank slices by uncertainty).")
            return
        item = self.queue.next()
        if item is None:
            self.queue_info.value = f"all {len(self.queue.ranking)} slices reviewed"
            return
        ref, score = item
        layer = self._layer
        world = layer.data_to_world([ref.index[0]] + [0] * (layer.ndim - 1))
        viewer.dims.set_point(viewer.dims.ndim - len(spatial_shape(layer)), world[0])
        self.queue_info.value = f"{ref.describe()}: uncertainty {score:.3f} · {self.queue.remaining} left"
