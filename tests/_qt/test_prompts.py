"""Box prompts and propagation in a real viewer, with LiteMedSAM's real weights on real data."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._qt.prefetch import PROMPT, SETTLE_MS
from slicewise._qt.prompt_layers import BOXES_KEY
from slicewise._qt.runner import Job, JobRunner
from slicewise.core.features import FEATURES
from slicewise.core.metrics import dice_score
from slicewise.core.prompting import embedding_cache, slice_key
from slicewise.core.slices import take_slice
from slicewise.core.types import Progress, SliceRef
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


def prompt_model(widget: SlicewiseDock):
    return next(m for (name, *_), m in widget.state.models.items() if name == "lite_medsam")


def encoder_runs(widget: SlicewiseDock) -> list[int]:
    """Hook the prompt model's encoder (its ONNX Runtime twin where it has one) once it is loaded; the
    list grows by one per encoder forward."""
    runs: list[int] = []
    prompt_model(widget).inference_module.image_encoder.register_forward_hook(lambda *_: runs.append(1))
    return runs


def encoded(widget: SlicewiseDock, image, z: int) -> bool:
    """Whether slice ``z`` of ``image`` has its embedding in the prompt model's cache."""
    return slice_key(take_slice(image.data, SliceRef((z,)), rgb=True)) in embedding_cache(prompt_model(widget))


def test_a_box_drawn_on_a_slice_proposes_the_polyp_and_accept_takes_it(
    make_napari_viewer, qtbot, notifications, kvasir_test
):
    viewer = make_napari_viewer()
    stack, masks = np.zeros((4, 256, 256, 3), np.uint8), np.zeros((4, 256, 256), np.uint8)
    for i, (_, picture, mask) in enumerate(kvasir_test[:4]):
        stack[i, : mask.shape[0], : mask.shape[1]], masks[i, : mask.shape[0], : mask.shape[1]] = picture, mask
    image = viewer.add_image(stack, rgb=True, name="polyps")
    viewer.dims.set_current_step(0, 0)
    widget = docked(viewer, image)
    status = widget.prompts.status
    FEATURES.clear()  # encoder runs are counted: no slice encoded by an earlier test

    widget.prompts.boxes_button.native.click()
    boxes = next(layer for layer in viewer.layers if layer.metadata.get(BOXES_KEY) == "polyps")
    assert boxes.mode == "add_rectangle" and viewer.layers.selection.active is boxes
    qtbot.waitUntil(lambda: "slice 0 ready for boxes" in status.value, timeout=TIMEOUT_MS)  # encoded at once
    runs = encoder_runs(widget)

    viewer.dims.set_current_step(0, 2)  # scrolled past: never encoded
    viewer.dims.set_current_step(0, 1)  # rested on: encoded ahead, with no box drawn
    qtbot.waitUntil(lambda: "slice 1 ready for boxes" in status.value, timeout=TIMEOUT_MS)
    assert encoded(widget, image, 1) and not encoded(widget, image, 2) and runs == [1]

    rows, cols = np.nonzero(masks[1])
    boxes.add_rectangles(rectangle(1, rows.min(), cols.min(), rows.max(), cols.max()))
    qtbot.waitUntil(lambda: len(proposals(viewer)) == 1 and not widget.runner.running("prompt"), timeout=TIMEOUT_MS)
    proposal = proposals(viewer)[0]
    assert runs == [1]  # the box cost only the decoder
    assert dice_score(proposal.data[1], masks[1], 2) > 0.9
    assert not proposal.data[0].any() and not proposal.data[2].any()
    assert "1 box on slice 1" in widget.prompts.status.value

    widget.edit.new_button.native.click()
    widget.edit.accept_button.native.click()
    np.testing.assert_array_equal(widget.edit.target.value.data[1], proposal.data[1])

    boxes.add_rectangles(rectangle(1, 2, 2, 40, 40))  # a second box: the union of both
    qtbot.waitUntil(lambda: "2 boxes on slice 1" in widget.prompts.status.value, timeout=TIMEOUT_MS)
    assert proposal.data[1].sum() >= widget.edit.target.value.data[1].sum()

    viewer.dims.set_current_step(0, 2)  # a box drawn while its slice is being encoded ahead waits for it
    qtbot.waitUntil(lambda: "preparing slice 2 for boxes" in status.value, timeout=TIMEOUT_MS)
    rows, cols = np.nonzero(masks[2])
    boxes.add_rectangles(rectangle(2, rows.min(), cols.min(), rows.max(), cols.max()))
    qtbot.waitUntil(lambda: "1 box on slice 2" in status.value, timeout=TIMEOUT_MS)
    assert runs == [1, 1]  # one encoder forward for slice 2, not two
    assert dice_score(proposal.data[2], masks[2], 2) > 0.8

    viewer.dims.set_current_step(0, 3)  # leaving slice 3 stops its encoding ahead; the box waits for none
    qtbot.waitUntil(lambda: widget.prompts.ahead.encoding == SliceRef((3,)), timeout=TIMEOUT_MS)
    viewer.dims.set_current_step(0, 1)
    boxes.add_rectangles(rectangle(1, 60, 60, 120, 120))
    qtbot.waitUntil(lambda: "3 boxes on slice 1" in status.value, timeout=TIMEOUT_MS)
    assert runs == [1, 1] and not encoded(widget, image, 3)  # slice 3's run ended unfinished, nothing cached
    assert not any("could not" in message or "stopped" in message for message in notifications)

    boxes.visible = False  # a hidden boxes layer: the person stopped prompting, nothing is encoded ahead
    viewer.dims.set_current_step(0, 3)
    qtbot.wait(2 * SETTLE_MS)
    assert not widget.runner.running("prompt") and "3 boxes on slice 1" in status.value
    boxes.visible = True  # shown again: prompting resumes on the viewed slice
    qtbot.waitUntil(lambda: "slice 3 ready for boxes" in status.value, timeout=TIMEOUT_MS)
    assert encoded(widget, image, 3)


def test_leaving_a_slice_stops_its_encoding_ahead_and_the_slice_rested_on_is_encoded(
    make_napari_viewer, qtbot, notifications, kvasir_test
):
    viewer = make_napari_viewer()
    stack = np.zeros((3, 256, 256, 3), np.uint8)
    for i, (_, picture, _mask) in enumerate(kvasir_test[:3]):
        stack[i, : picture.shape[0], : picture.shape[1]] = picture
    image = viewer.add_image(stack, rgb=True, name="polyps")
    viewer.dims.set_current_step(0, 0)
    widget = docked(viewer, image)
    FEATURES.clear()  # encoder runs are counted: no slice encoded by an earlier test

    widget.prompts.boxes_button.native.click()  # slice 0 is encoded ahead at once, once the model loads
    qtbot.waitUntil(lambda: any(name == "lite_medsam" for name, *_ in widget.state.models), timeout=TIMEOUT_MS)
    runs = encoder_runs(widget)
    stale = widget.runner.current(PROMPT)
    assert widget.prompts.ahead.encoding == SliceRef((0,)) and not runs  # its encoder runs (or is about to)
    token = stale.args[-1]

    viewer.dims.set_current_step(0, 1)  # scrolled past
    assert token.stopped  # left: stopped at once, not after the rest
    viewer.dims.set_current_step(0, 2)  # rested on
    qtbot.waitUntil(lambda: "slice 2 ready for boxes" in widget.prompts.status.value, timeout=TIMEOUT_MS)
    assert runs == [1] and encoded(widget, image, 2)  # one encoder forward finished: slice 2's
    assert not encoded(widget, image, 0) and not encoded(widget, image, 1)  # slice 0's run ended unfinished
    assert not any("could not" in message or "stopped" in message for message in notifications)


def _waits(release: threading.Event, value: str):
    yield Progress(0, 1, "started")
    release.wait(10)
    return value


def _returns_box():
    yield Progress(0, 1, "decode")
    return "box"


def test_a_stopped_encoding_ahead_keeps_the_box_waiting_behind_it(qtbot, notifications):
    """The runner's side of the stop: the running job's result is dropped, the pending one still runs."""
    runner, release, results = JobRunner(), threading.Event(), []
    ahead = Job(work=_waits, args=(release, "ahead"), on_result=results.append, description=None)
    runner.submit(PROMPT, ahead)
    box = Job(work=_returns_box, on_result=results.append, description=None, priority=1)
    runner.submit(PROMPT, box)
    assert runner.current(PROMPT) is ahead and runner.pending(PROMPT) is box
    assert runner.cancel(PROMPT, keep_pending=True)
    release.set()
    qtbot.waitUntil(lambda: results == ["box"] and runner.current(PROMPT) is None, timeout=10_000)
    assert not notifications


def test_no_slice_is_encoded_ahead_for_a_model_that_takes_no_prompts(make_napari_viewer, qtbot, tiny_checkpoint):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((2, 64, 64), np.uint8), name="scan")
    widget = docked(viewer, image)
    widget.state.open_model(str(tiny_checkpoint))  # a U-Net: it takes no prompts
    widget.prompts.prompt_model.value = str(tiny_checkpoint)

    widget.prompts.boxes_button.native.click()
    assert "takes no box or point prompts" in widget.prompts.status.value
    viewer.dims.set_current_step(0, 1)
    qtbot.wait(2 * SETTLE_MS)
    assert not widget.runner.running("prompt") and not widget.prompts.busy
    assert "takes no box or point prompts" in widget.prompts.status.value  # nothing ran and said otherwise
    assert not widget.state.models  # the model was not even loaded


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
