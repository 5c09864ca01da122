"""The README's main job with a display: napari, the sample stack, the widget and a prediction."""

from __future__ import annotations

import napari

from slicewise._qt.dock import SlicewiseDock
from slicewise._sample_data import kvasir_test_stack


def open_demo(model: str, viewer: napari.Viewer | None = None) -> tuple[napari.Viewer, SlicewiseDock]:
    """A viewer with the sample data, the docked widget following the slice, and a first prediction."""
    viewer = viewer or napari.Viewer(title="slicewise demo")
    for data, kwargs, kind in kvasir_test_stack():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget, name="slicewise", area="right")
    widget.state.image = viewer.layers["kvasir_seg test"]
    widget.state.model = model
    widget.predict.follow.value = True
    return viewer, widget


def run_demo(model: str) -> None:
    """Open the demo and run napari's event loop until the window closes."""
    open_demo(model)
    napari.run()
