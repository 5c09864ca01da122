"""The review queue in the viewer: rank a stack's slices by uncertainty, visit the worst first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import napari
from magicgui.widgets import Container, Label, PushButton
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from slicewise._qt.jobs import Failure, rank_job
from slicewise._qt.layers import show_prediction, spatial_shape
from slicewise.core.review import ReviewQueue, stack_refs
from slicewise.core.types import SliceRef
from slicewise.errors import SlicewiseError

if TYPE_CHECKING:
    from slicewise._qt.widget import PredictWidget

NEXT_KEY = "Shift-U"


class ReviewPanel(Container):
    """Buttons (and ``Shift-U``) that send the annotator to the least certain unreviewed slice."""

    def __init__(self, viewer: napari.viewer.Viewer, predictor: PredictWidget) -> None:
        super().__init__(labels=False)
        self._viewer = viewer
        self._predictor = predictor
        self.rank_button = PushButton(text="Rank slices by uncertainty")
        self.next_button = PushButton(text=f"Next uncertain slice ({NEXT_KEY})")
        self.queue_info = Label(value="")
        self.extend([self.rank_button, self.next_button, self.queue_info])
        self.queue: ReviewQueue | None = None
        self._layer: napari.layers.Image | None = None
        self.rank_button.changed.connect(self.rank)
        self.next_button.changed.connect(self.next_slice)
        viewer.bind_key(NEXT_KEY, lambda _viewer: self.next_slice(), overwrite=True)

    def rank(self) -> None:
        """Predict every slice with uncertainty in a worker, showing each as it comes."""
        request = self._predictor.current_request()
        if request is None:
            return
        layer = request.layer
        try:
            total = len(stack_refs(tuple(layer.data.shape), layer.rgb))
        except SlicewiseError as error:
            show_error(str(error))
            return
        bar = progress(total=total, desc="slicewise: ranking slices")
        worker = rank_job(request, self._predictor.models)
        worker.yielded.connect(lambda prediction: (show_prediction(self._viewer, layer, prediction), bar.update(1)))
        worker.returned.connect(lambda result: self._on_ranked(layer, result))
        worker.finished.connect(bar.close)
        worker.start()

    def _on_ranked(self, layer: napari.layers.Image, result: list[tuple[SliceRef, float]] | Failure) -> None:
        if isinstance(result, Failure):
            show_error(result.message)
            return
        self.queue, self._layer = ReviewQueue(result), layer
        self.next_slice()

    def next_slice(self) -> None:
        """Jump the viewer to the most uncertain slice not yet reviewed."""
        if self.queue is None or self._layer not in self._viewer.layers:
            show_info("Rank the slices of a stack first (Rank slices by uncertainty).")
            return
        item = self.queue.next()
        if item is None:
            self.queue_info.value = f"all {len(self.queue.ranking)} slices reviewed"
            return
        ref, score = item
        layer = self._layer
        world = layer.data_to_world([ref.index[0]] + [0] * (layer.ndim - 1))
        self._viewer.dims.set_point(self._viewer.dims.ndim - len(spatial_shape(layer)), world[0])
        self.queue_info.value = f"{ref.describe()}: uncertainty {score:.3f} · {self.queue.remaining} left"
