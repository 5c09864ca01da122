"""Box prompts and propagation in a real viewer, with LiteMedSAM's real weights on real data."""

from __future__ import annotations

import numpy as np
import pytest

from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._qt.panels.prompts import BOXES_KEY
from slicewise.core.metrics import dice_score
from slicewise.io.medical import read_volume

TIMEOUT_MS = 120_000

pytestmark = pytest.mark.usefixtures("one_thread")


def proposals(viewer):
    return [layer for layer in viewer.layers if layer.metadata.get(META_KEY, {}).get("role") == "labels"]


def docked(viewer, image) -> SlicewiseDock:
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    widget.source.image.value = image
    widget.source.device.value = "cpu"
    return widget


def rectangle(z: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """The four corners of a box on slice ``z``, as napari's rectangle tool makes them."""
    return np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], float)


def encoder_runs(widget: SlicewiseDock) -> list[int]:
    """Hook the prompt model's encoder once it is loaded; the list grows by one per encoder forward."""
    runs: list[int] = []
    model = next(m for (name, *_), m in widget.state.models.items() if name == "lite_medsam")
    model.module.image_encoder.register_forward_hook(lambda *_: runs.append(1))
    return runs


def test_a_box_drawn_on_a_slice_proposes_the_polyp_and_accept_takes_it(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    stack, masks = np.zeros((3, 256, 256, 3), np.uint8), np.zeros((3, 256, 256), np.uint8)
    for i, (_, picture, mask) in enumerate(kvasir_test[:3]):
        stack[i, : mask.shape[0], : mask.shape[1]], masks[i, : mask.shape[0], : mask.shape[1]] = picture, mask
    image = viewer.add_image(stack, rgb=True, name="polyps")
    viewer.dims.set_current_step(0, 1)
    widget = docked(viewer, image)

    widget.prompts.boxes_button.native.click()
    boxes = next(layer for layer in viewer.layers if layer.metadata.get(BOXES_KEY) == "polyps")
    assert boxes.mode == "add_rectangle" and viewer.layers.selection.active is boxes
    qtbot.waitUntil(lambda: "encoded" in widget.prompts.status.value, timeout=TIMEOUT_MS)  # the encoder ran ahead
    runs = encoder_runs(widget)

    rows, cols = np.nonzero(masks[1])
    boxes.add_rectangles(rectangle(1, rows.min(), cols.min(), rows.max(), cols.max()))
    qtbot.waitUntil(lambda: len(proposals(viewer)) == 1 and not widget.runner.running("prompt"), timeout=TIMEOUT_MS)
    proposal = proposals(viewer)[0]
    assert runs == []  # the box cost only the decoder
    assert dice_score(proposal.data[1], masks[1], 2) > 0.9
    assert not proposal.data[0].any() and not proposal.data[2].any()
    assert "1 box on slice 1" in widget.prompts.status.value

    widget.edit.new_button.native.click()
    widget.edit.accept_button.native.click()
    np.testing.assert_array_equal(widget.edit.target.value.data[1], proposal.data[1])

    boxes.add_rectangles(rectangle(1, 2, 2, 40, 40))  # a second box: the union of both
    qtbot.waitUntil(lambda: "2 boxes on slice 1" in widget.prompts.status.value, timeout=TIMEOUT_MS)
    assert proposal.data[1].sum() >= widget.edit.target.value.data[1].sum()


def test_propagate_follows_a_real_lesion_through_the_stack(make_napari_viewer, qtbot, data_dir):
    viewer = make_napari_viewer()
    volume = read_volume(data_dir / "pyradiomics_3d" / "breast1_image.nrrd")
    truth = read_volume(data_dir / "pyradiomics_3d" / "breast1_label.nrrd").array
    image = viewer.add_image(volume.array, name="breast1", scale=volume.spacing)
    widget = docked(viewer, image)
    person = viewer.add_labels(np.zeros(truth.shape, np.uint8), name="mine", scale=volume.spacing)
    person.data[9] = truth[9]  # the lesion the person accepted on slice 9
    widget.edit.target.value = person
    viewer.dims.set_current_step(0, 9)

    widget.prompts.propagate_button.native.click()
    assert widget.prompts.propagate_button.text == "Stop propagating"
    qtbot.waitUntil(lambda: not widget.runner.running("propagate"), timeout=TIMEOUT_MS)
    proposal = proposals(viewer)[0]
    assert sorted(np.nonzero(proposal.data.any(axis=(1, 2)))[0]) == [8, 10]
    assert dice_score(proposal.data[10], truth[10], 2) > 0.7
    np.testing.assert_array_equal(person.data[9], truth[9])  # nothing the person drew changed
    assert not person.data[[8, 10]].any()  # proposals wait for an accept
    assert "to 2 more slices" in widget.prompts.status.value

    widget.edit.every_slice.value = True  # one Accept takes every propagated slice, as one undo step
    widget.edit.accept_button.native.click()
    np.testing.assert_array_equal(person.data[[8, 10]], proposal.data[[8, 10]])
    np.testing.assert_array_equal(person.data[9], truth[9])
    assert "every slice" in widget.edit.status.value
    person.undo()
    assert not person.data[[8, 10]].any() and np.array_equal(person.data[9], truth[9])


def test_propagate_without_a_stack_or_an_object_says_so(make_napari_viewer, notifications, kvasir_test):
    viewer = make_napari_viewer()
    image = viewer.add_image(kvasir_test[0][1], rgb=True, name="one")
    widget = docked(viewer, image)
    widget.prompts.propagate_button.native.click()
    stack = viewer.add_image(np.zeros((3, 32, 32), np.uint8), name="empty")
    widget.source.image.value = stack
    widget.prompts.propagate_button.native.click()
    assert any("needs a 3D stack" in message for message in notifications)
    assert any("There is no object on slice 0" in message for message in notifications)
    assert not widget.runner.running("propagate")
