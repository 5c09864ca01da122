"""Follow-the-slice in a shown napari window: layers written in place, one frame per result, a window that fits."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container, Label
from qtpy.QtWidgets import QScrollArea

from slicewise._qt.demo import fit_window
from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._qt.panels.predict import settle_layouts

TIMEOUT_MS = 60_000


def outputs(viewer) -> dict[str, object]:
    return {layer.metadata[META_KEY]["role"]: layer for layer in viewer.layers if META_KEY in layer.metadata}


def test_following_the_slice_writes_into_the_same_layers_in_place(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer(show=True)
    stack = np.stack([kvasir_test[i][1][:96, :96] for i in range(3)])
    image = viewer.add_image(stack, name="stack", rgb=True)
    viewer.dims.set_current_step(0, 0)
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    widget.source.image.value = image
    widget.predict.follow.value = True
    qtbot.waitUntil(
        lambda: "slice 0" in widget.predict.status.value and not widget.runner.running(), timeout=TIMEOUT_MS
    )
    first = outputs(viewer)
    assert set(first) == {"labels", "uncertainty"}
    arrays = {role: layer.data for role, layer in first.items()}

    for z in (1, 2):
        viewer.dims.set_current_step(0, z)
        qtbot.waitUntil(
            lambda z=z: f"slice {z}" in widget.predict.status.value and not widget.runner.running(),
            timeout=TIMEOUT_MS,
        )
    after = outputs(viewer)
    assert all(after[role] is layer for role, layer in first.items()), "the same layers, not new ones"
    assert all(after[role].data is arrays[role] for role in arrays), "the same arrays, written in place"
    assert len(viewer.layers) == 3
    assert after["labels"].name.endswith("(slices 0, 1, 2)") and all(
        after["uncertainty"].data[z].any() for z in range(3)
    )


def test_the_dock_scrolls_so_the_window_fits_the_screen(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    fit_window(viewer)
    assert isinstance(widget.native, QScrollArea) and widget.native.widget().isAncestorOf(widget.predict.native)
    window = viewer.window._qt_window
    assert window.height() <= window.screen().availableGeometry().height()
    assert window.height() < widget.native.widget().sizeHint().height(), "the panels scroll; the window does not grow"


def test_a_new_status_is_laid_out_before_the_next_frame(qtbot):
    label = Label(value="short")
    label.native.setWordWrap(True)
    box = Container(widgets=[Label(value="above"), label])
    box.native.setFixedWidth(160)
    qtbot.addWidget(box.native)
    box.show()
    qtbot.waitExposed(box.native)
    one_line = label.native.height()

    label.value = "a status long enough to wrap onto three or more lines at this width, as a model's path does"
    settle_layouts(label.native)

    assert label.native.height() > one_line  # laid out now, not in later passes of the event loop (each a frame)
