"""What an annotator hit in the viewer (issue 13), each reproduced in a real napari viewer (runs under Xvfb)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slicewise import DEFAULT_MODEL
from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._qt.runner import Job, JobRunner
from slicewise.core.types import Progress

TIMEOUT_MS = 60_000


def outputs(viewer, role="labels"):
    return [layer for layer in viewer.layers if layer.metadata.get(META_KEY, {}).get("role") == role]


def make_widget(viewer, image_layer) -> SlicewiseDock:
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    widget.source.image.value = image_layer
    widget.state.model = "polyp_unet"  # the model these findings were made with (names below say it)
    return widget


def onnx_unet(folder: Path) -> Path:
    """A tiny grayscale three-class U-Net exported to ONNX (it runs in onnxruntime: no gradients)."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    network = UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=[4, 8, 16], strides=[2, 2]).eval()
    path = folder / "unet.onnx"
    torch.onnx.export(
        network,
        (torch.rand(1, 1, 32, 32),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
        dynamo=False,
    )
    return path


# -- 1. every exception a job raises is one notification, and the dock keeps working ------------------------


def _raises(error: Exception):
    yield Progress(0, 1, "about to fail")
    raise error


def _returns(value):
    yield Progress(0, 1, "quick")
    return value


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("x"), ZeroDivisionError("y")])
def test_any_exception_in_a_job_is_one_notification_and_the_lane_goes_on(qtbot, notifications, error):
    runner, results = JobRunner(), []
    runner.submit("predict", Job(work=_raises, args=(error,), on_result=results.append))
    qtbot.waitUntil(lambda: not runner.running("predict"), timeout=10_000)
    assert len(notifications) == 1 and type(error).__name__ in notifications[0]
    assert "\n" not in notifications[0]
    runner.submit("predict", Job(work=_returns, args=(7,), on_result=results.append))
    qtbot.waitUntil(lambda: results == [7], timeout=10_000)


def test_onnx_saliency_is_one_sentence_and_predict_still_works(make_napari_viewer, qtbot, notifications, tmp_path):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((48, 48), np.float32), name="mr")
    widget = make_widget(viewer, image)
    widget.source.classes.value = "background, a, b"
    widget.state.open_model(str(onnx_unet(tmp_path)))
    widget.predict.explain.value = "saliency"
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: bool(notifications) and not widget.runner.running(), timeout=TIMEOUT_MS)
    assert any("occlusion" in message and "gradients" in message for message in notifications), notifications

    widget.predict.explain.value = "none"
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: bool(outputs(viewer)) and not widget.runner.running(), timeout=TIMEOUT_MS)
    assert outputs(viewer)[0].data.shape == (48, 48)


# -- 3. occlusion reports progress per batch and stops at Cancel ---------------------------------------------


def test_occlusion_reports_each_batch_and_stops_at_cancel(make_napari_viewer, qtbot, kvasir_test, monkeypatch):
    from slicewise._qt import runner as runner_module

    stages: list[Progress] = []
    real = runner_module.JobRunner._on_yield
    monkeypatch.setattr(
        runner_module.JobRunner,
        "_on_yield",
        lambda self, state, job, bar, item: (stages.append(item), real(self, state, job, bar, item)),
    )
    viewer = make_napari_viewer()
    image = viewer.add_image(kvasir_test[0][1], name="polyp", rgb=True)
    widget = make_widget(viewer, image)
    widget.predict.explain.value = "occlusion"
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: any("batch 2 of" in s.stage for s in stages), timeout=TIMEOUT_MS)
    batch = next(s for s in stages if "batch 2 of" in s.stage)
    assert batch.total > 4 and "left" in batch.stage
    widget.predict.cancel_button.native.click()
    cancelled = time.perf_counter()
    qtbot.waitUntil(lambda: not widget.runner.running(), timeout=TIMEOUT_MS)
    assert time.perf_counter() - cancelled < 10
    assert not any(f"batch {batch.total} of" in s.stage for s in stages), "occlusion ran to its end after Cancel"
    assert not outputs(viewer, "explanation:occlusion")


# -- 2. Accept and Restore keep the person's layer active; 4. erasures are protected like strokes -----------


def edit_panel(viewer, proposal: np.ndarray):
    """A docked widget on an image of the proposal's shape, a slicewise proposal and a person's empty labels."""
    image = viewer.add_image(np.zeros(proposal.shape, np.float32), name="img")
    widget = make_widget(viewer, image)
    widget.edit.proposal = viewer.add_labels(
        proposal, name="m labels", metadata={META_KEY: {"image": "img", "model": "m", "role": "labels"}}
    )
    mine = viewer.add_labels(np.zeros(proposal.shape, np.uint8), name="mine")
    widget.edit.target.value = mine
    return widget, mine


def press(viewer, qtbot, key, modifier=None):
    """A real key press on napari's canvas, as a person types it."""
    from qtpy.QtCore import Qt

    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, key, modifier or Qt.KeyboardModifier.NoModifier)


def test_accept_keeps_the_persons_layer_active_so_ctrl_z_and_the_brush_work(make_napari_viewer, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer()
    proposal = np.zeros((16, 16), np.uint8)
    proposal[2:8, 2:8] = 1
    widget, mine = edit_panel(viewer, proposal)
    viewer.layers.selection.active = mine
    mine.mode = "paint"
    widget.edit.accept_button.native.click()
    assert (mine.data == proposal).all()
    provenance = [layer for layer in viewer.layers if layer.metadata.get(META_KEY, {}).get("role") == "provenance"]
    assert len(provenance) == 1 and provenance[0] not in viewer.layers.selection
    assert viewer.layers.selection.active is mine and mine.mode == "paint"

    press(viewer, qtbot, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not mine.data.any(), "Ctrl+Z did not undo the Accept"
    mine.brush_size = 1
    mine.paint((12, 12), 4)
    assert mine.data[12, 12] == 4


def test_restored_labels_are_active_never_their_provenance(make_napari_viewer):
    from slicewise._qt.autosave import restore_layer
    from slicewise.io.autosave import SavedLabels

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8), np.float32), name="img")
    labels = np.zeros((8, 8), np.uint8)
    labels[1:3, 1:3] = 2
    saved = SavedLabels(
        name="mine",
        labels=labels,
        provenance=(labels != 0).astype(np.uint8) * 2,
        scale=(1.0, 1.0),
        translate=(0.0, 0.0),
        source="img",
        saved_at=0.0,
    )
    layer = restore_layer(viewer, saved)
    assert viewer.layers.selection.active is layer
    assert [each.name for each in viewer.layers.selection] == [layer.name]


def test_erasing_accepted_pixels_survives_merge_and_accept(make_napari_viewer):
    viewer = make_napari_viewer()
    proposal = np.zeros((16, 16), np.uint8)
    proposal[2:10, 2:10] = 1
    widget, mine = edit_panel(viewer, proposal)
    widget.edit.accept_button.native.click()
    mine.brush_size = 3
    mine.mode = "erase"
    for row in (4, 5, 6):
        mine.paint((row, 5), 0)  # napari's eraser, one history step each
    erased = (proposal != 0) & (mine.data == 0)
    assert erased.sum() >= 9

    for button in (widget.edit.merge_button, widget.edit.accept_button):
        button.native.click()
        assert not mine.data[erased].any(), f"{button.text} refilled the person's erasures"
    assert "erased" in widget.edit.status.value

    widget.edit.overwrite.value = True
    widget.edit.accept_button.native.click()
    assert (mine.data == proposal).all()


# -- 5. an opened label file is never the default target (nor the propagation seed) -------------------------


@pytest.mark.parametrize("dock_first", [False, True])
def test_an_opened_label_file_is_never_the_default_target(make_napari_viewer, data_dir, notifications, dock_first):
    viewer = make_napari_viewer()
    image = viewer.open(data_dir / "pyradiomics_3d" / "breast1_image.nrrd", plugin="slicewise")[0]
    widget = make_widget(viewer, image) if dock_first else None
    reference = viewer.open(data_dir / "pyradiomics_3d" / "breast1_label.nrrd", plugin="slicewise")[0]
    widget = widget or make_widget(viewer, image)
    kept = np.array(reference.data, copy=True)
    assert widget.edit.target.value is None and widget.state.target is None
    assert reference in widget.edit.target.choices  # the person may still choose it
    widget.edit.proposal = viewer.add_labels(
        np.ones(reference.data.shape, np.uint8), name="m labels", metadata={META_KEY: {"role": "labels"}}
    )
    widget.edit.accept_button.native.click()
    np.testing.assert_array_equal(reference.data, kept)
    assert notifications[-1].startswith("Choose a labels layer")
    assert widget.state.target is None  # nor is it the seed propagation starts from


# -- 9. the image choice: the person's images only, and no silent switch --------------------------------------


def test_image_choice_excludes_outputs_and_never_switches_silently(
    make_napari_viewer, qtbot, kvasir_test, notifications
):
    viewer = make_napari_viewer()
    other = viewer.add_image(kvasir_test[1][1], name="other", rgb=True)
    image = viewer.add_image(kvasir_test[0][1], name="polyp", rgb=True)
    widget = make_widget(viewer, image)
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: bool(outputs(viewer)) and not widget.runner.running(), timeout=TIMEOUT_MS)
    assert outputs(viewer, "uncertainty")
    assert set(widget.source.image.choices) == {None, other, image}

    widget.predict.explain.value = "saliency"
    widget.predict.predict_button.native.click()
    viewer.layers.remove(image)  # mid-prediction
    assert widget.source.image.value is None and widget.state.image is None
    assert any("'polyp' was removed" in message for message in notifications)
    qtbot.waitUntil(lambda: not widget.runner.running(), timeout=TIMEOUT_MS)
    assert widget.state.image is None and not outputs(viewer, "explanation:saliency")


# -- 6. a model on images unlike its training data: said once, and the prediction goes on ---------------------


def test_rgb_model_on_grayscale_mr_warns_once_and_predicts(make_napari_viewer, qtbot, data_dir, notifications):
    viewer = make_napari_viewer()
    image = viewer.open(data_dir / "pyradiomics_3d" / "breast1_image.nrrd", plugin="slicewise")[0]
    widget = make_widget(viewer, image)
    for step in (2, 3):
        viewer.dims.set_current_step(0, step)
        widget.predict.predict_button.native.click()
        qtbot.waitUntil(lambda step=step: f"slice {step}" in widget.predict.status.value, timeout=TIMEOUT_MS)
    warnings = [message for message in notifications if "trained on" in message]
    assert len(warnings) == 1, notifications
    assert "colour (RGB) images of kvasir_seg" in warnings[0] and "grayscale" in warnings[0]
    assert outputs(viewer)[0].data[2:4].any() or outputs(viewer)[0].data.shape[0] > 3


# -- 7. Reject takes the viewed slice (or every slice when asked), with its maps, and can be undone ---------


def test_reject_clears_the_viewed_slice_with_its_maps_and_undo_brings_it_back(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    stack = np.stack([kvasir_test[i][1][:96, :96] for i in range(3)])
    image = viewer.add_image(stack, name="stack", rgb=True)
    widget = make_widget(viewer, image)
    widget.predict.maps.value = True
    for z in (0, 2):
        viewer.dims.set_current_step(0, z)
        widget.predict.predict_button.native.click()
        qtbot.waitUntil(lambda z=z: f"slice {z}" in widget.predict.status.value, timeout=TIMEOUT_MS)
    labels, probability = outputs(viewer)[0], outputs(viewer, "probability:polyp")[0]
    kept = np.array(labels.data, copy=True), np.array(probability.data, copy=True)
    assert kept[1][0].any() and kept[1][2].any()

    widget.edit.reject_button.native.click()  # the viewed slice is 2
    assert labels in viewer.layers and probability in viewer.layers
    assert not labels.data[2].any() and not probability.data[2].any()
    np.testing.assert_array_equal(probability.data[0], kept[1][0])  # slice 0 stays
    assert labels.name == "polyp_unet labels (slice 0)"

    widget.edit.undo_reject_button.native.click()
    np.testing.assert_array_equal(labels.data, kept[0])
    np.testing.assert_array_equal(probability.data, kept[1])

    widget.edit.every_slice.value = True
    widget.edit.reject_button.native.click()
    assert not outputs(viewer) and not outputs(viewer, "probability:polyp") and not outputs(viewer, "uncertainty")
    widget.edit.undo_reject_button.native.click()
    assert outputs(viewer) == [labels] and outputs(viewer, "probability:polyp") == [probability]
    assert widget.edit.proposal is labels
    np.testing.assert_array_equal(labels.data, kept[0])


# -- 8. File > Open on medical files picks slicewise's reader -------------------------------------------------


def test_opening_medical_files_without_naming_a_reader_uses_slicewises(make_napari_viewer, data_dir):
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    get_settings().plugins.extension2reader = {"*.dcm": "napari"}  # a person's own choice is kept
    make_widget(viewer, None)
    chosen = get_settings().plugins.extension2reader
    assert chosen["*.nrrd"] == chosen["*.nii.gz"] == chosen["*.nii"] == "slicewise" and chosen["*.dcm"] == "napari"
    # File > Open calls viewer.open with no plugin: napari then takes the preferred reader, else asks
    layer = viewer.open(data_dir / "pyradiomics_3d" / "breast1_image.nrrd", plugin=None)[0]
    assert "slicewise_medical" in layer.metadata


# -- 10. names that say what a layer holds ---------------------------------------------------------------------


def test_names_say_which_slices_and_which_explanation(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    stack = np.stack([kvasir_test[i][1][:96, :96] for i in range(5)])
    image = viewer.add_image(stack, name="stack", rgb=True)
    widget = make_widget(viewer, image)
    for z, method in ((1, "gradcam"), (3, "saliency"), (4, "gradcam")):
        viewer.dims.set_current_step(0, z)
        widget.predict.explain.value = method
        widget.predict.predict_button.native.click()
        qtbot.waitUntil(lambda z=z: f"slice {z}" in widget.predict.status.value, timeout=TIMEOUT_MS)
    assert outputs(viewer)[0].name == "polyp_unet labels (slices 1, 3, 4)"
    roles = {layer.name: layer.metadata.get(META_KEY, {}).get("role", "") for layer in viewer.layers}
    names = sorted(name for name, role in roles.items() if role.startswith("explanation"))
    assert names == ["polyp_unet gradcam of polyp", "polyp_unet saliency of polyp"]
    saliency = outputs(viewer, "explanation:saliency")[0]
    assert saliency.visible and saliency.contrast_limits[1] < 1.0  # from the map's percentiles, not (0, 1)
    assert saliency.data[3].any() and not saliency.data[1].any()
    assert widget.predict.target_class.choices == (0, 1)  # "most predicted", "polyp"
    assert widget.predict.target_class.native.itemText(1) == "polyp"
    text = widget.source.device_info.value
    assert text.startswith("CPU, ") and ("1 thread" in text and "threads" not in text or "threads" in text)
    assert "1 threads" not in text


# -- 11. model lists: refused files and folders do not stay, file fields do not keep stale paths --------------


def test_a_folder_or_file_that_is_no_model_is_one_sentence_and_leaves_no_trace(
    make_napari_viewer, qtbot, tmp_path, notifications
):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    widget = make_widget(viewer, image)
    choices = list(widget.source.model.choices)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("no model here")
    widget.source.model_folder.value = folder
    assert "not a model folder" in notifications[-1] and ".safetensors" not in notifications[-1]
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    widget.source.checkpoint.value = broken
    assert len(notifications) == 2
    assert list(widget.source.model.choices) == choices and not widget.state.opened_models
    assert widget.source.checkpoint.value != broken and widget.source.model_folder.value != folder


# -- 12. the demo: the image is active, the reference is not editable, the window shows the slice --------------


def test_demo_starts_on_the_image_with_the_reference_read_only(make_napari_viewer, qtbot):
    from slicewise._qt.demo import open_demo

    viewer, widget = open_demo("polyp_unet", viewer=make_napari_viewer())
    qtbot.waitUntil(lambda: bool(outputs(viewer)) and not widget.runner.running(), timeout=TIMEOUT_MS)
    assert viewer.layers.selection.active is viewer.layers["kvasir_seg test"]
    assert not viewer.layers["reference masks"].editable
    size = viewer.window._qt_window.size()
    assert size.width() >= 1000 or size.width() == viewer.window._qt_window.screen().availableGeometry().width()


# -- the clarity gaps: keys, colours and legend, threads --------------------------------------------------------


def test_keys_work_while_a_dock_control_has_the_focus_and_are_listed_in_napari(make_napari_viewer, qtbot, kvasir_test):
    from napari.utils.action_manager import action_manager
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(kvasir_test[0][1][:96, :96], name="polyp", rgb=True)
    widget = make_widget(viewer, image)
    window = viewer.window._qt_window
    window.raise_()
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=10_000)
    combo = widget.predict.uncertainty.native
    combo.setFocus()
    qtbot.waitUntil(combo.hasFocus, timeout=5_000)
    qtbot.keyClick(combo, Qt.Key.Key_P, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: bool(outputs(viewer)) and not widget.runner.running(), timeout=TIMEOUT_MS)
    assert widget.predict.uncertainty.value == "entropy"  # the key went to Predict, not into the combo box
    widget.edit.new_button.native.click()
    qtbot.keyClick(combo, Qt.Key.Key_Y, Qt.KeyboardModifier.ShiftModifier)  # Accept
    assert widget.edit.target.value.data.any()
    listed = {action.description for action in action_manager._actions.values()}
    for words in ("Predict the viewed slice", "Accept the viewed slice", "Merge", "Reject", "Shift-U"):
        assert any(words in description for description in listed), words


def test_each_model_has_its_own_colours_and_the_legend_names_them(make_napari_viewer, qtbot, kvasir_test):
    from slicewise._qt.layers import model_colours

    viewer = make_napari_viewer()
    gray = kvasir_test[0][1][:96, :96].mean(-1).astype(np.float32)  # both models take grayscale
    image = viewer.add_image(gray, name="polyp")
    widget = make_widget(viewer, image)
    for model in ("fetal_head_unet", "polyp_unet"):
        widget.state.model = model
        widget.predict.predict_button.native.click()
        qtbot.waitUntil(lambda model=model: model in widget.predict.status.value, timeout=TIMEOUT_MS)
    first, second = outputs(viewer)
    assert first.colormap.map(1).tolist() != second.colormap.map(1).tolist()
    assert model_colours("fetal_head_unet", 2)[1] != model_colours("polyp_unet", 2)[1]
    legend = widget.edit.legend.value
    assert legend.startswith("<b>Accept takes polyp_unet: ") and "<br>fetal_head_unet: " in legend


def test_threads_follow_the_free_cores(monkeypatch):
    import os

    from slicewise._qt import state
    from slicewise._qt.panels.model import runs_on

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.8, 1.0, 1.0))
    assert state.free_cores() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 1.0, 1.0))
    assert state.free_cores() == 4
    threads = torch.get_num_threads()
    try:
        assert state.use_threads(1) == 1 and runs_on(torch.device("cpu")) == "CPU, 1 thread"
        assert state.use_threads(0) == 4 and runs_on(torch.device("cpu")) == "CPU, 4 threads"
    finally:
        torch.set_num_threads(threads)


def test_a_model_that_fails_to_load_leaves_the_list(make_napari_viewer, qtbot, tmp_path, notifications):
    from slicewise.models.checkpoint import save_checkpoint
    from slicewise.models.registry import build_model, make_spec

    spec = make_spec("unet", class_names=("background", "a"), in_channels=1, channels=[4, 8, 16], strides=[2, 2])
    other = make_spec("unet", class_names=("background", "a"), in_channels=1, channels=[8, 16, 32], strides=[2, 2])
    path = save_checkpoint(tmp_path / "mismatched.safetensors", build_model(other).state_dict(), spec, {})
    viewer = make_napari_viewer()
    widget = make_widget(viewer, viewer.add_image(np.zeros((32, 32), np.float32), name="img"))
    widget.source.checkpoint.value = path  # its header reads fine: it is opened
    assert widget.state.model == str(path)
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: bool(notifications) and not widget.runner.running(), timeout=TIMEOUT_MS)
    assert str(path) not in widget.source.model.choices and widget.state.model == DEFAULT_MODEL
