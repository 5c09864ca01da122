"""The README's main job with a display: napari, the sample stack, the widget and a prediction."""

from __future__ import annotations

import napari
from qtpy.QtCore import QTimer

from slicewise._qt.dock import SlicewiseDock
from slicewise._sample_data import kvasir_test_stack

WINDOW = (1400, 900)  # wide enough for the 256² slice beside the dock; shrunk to the screen if smaller


def open_demo(model: str, viewer: napari.Viewer | None = None) -> tuple[napari.Viewer, SlicewiseDock]:
    """A viewer with the sample data, the docked widget following the slice, and a first prediction.

    The image is the active layer (the reference masks are read-only ground truth: a first stroke
    must not edit them) and the window opens at a size that shows the whole slice beside the dock,
    which scrolls when it is taller than the window.
    """
    viewer = viewer or napari.Viewer(title="slicewise demo")
    for data, kwargs, kind in kvasir_test_stack():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    reference = viewer.layers["reference masks"]
    reference.editable = False
    image = viewer.layers["kvasir_seg test"]
    viewer.layers.selection.active = image
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget, name="slicewise", area="right")
    fit_window(viewer)
    widget.state.image = image
    widget.state.model = model
    widget.predict.follow.value = True
    return viewer, widget


def fit_window(viewer: napari.Viewer, size: tuple[int, int] = WINDOW) -> None:
    """Resize the window to ``size`` (or the screen's free area, if smaller) and fit the image in the canvas."""
    window = viewer.window._qt_window
    screen = window.screen().availableGeometry() if window.screen() is not None else None
    width, height = size if screen is None else (min(size[0], screen.width()), min(size[1], screen.height()))
    window.resize(width, height)
    viewer.reset_view()
    QTimer.singleShot(0, viewer.reset_view)  # again once the resize reached the canvas


def run_demo(model: str) -> None:
    """Open the demo and run napari's event loop until the window closes."""
    open_demo(model)
    napari.run()
