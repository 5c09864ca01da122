"""The widget driven in a real napari viewer on real data (runs under Xvfb)."""

from __future__ import annotations

import numpy as np
import tifffile
from app_model.types import KeyBinding

import slicewise
from slicewise._qt import jobs
from slicewise._qt.demo import open_demo
from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise.core.metrics import dice_score
from slicewise.core.types import SliceRef

TIMEOUT_MS = 60_000


def outputs(viewer, role="labels"):
    return [layer for layer in viewer.layers if layer.metadata.get(META_KEY, {}).get("role") == role]


def make_widget(viewer, image_layer) -> SlicewiseDock:
    widget = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(widget)
    widget.source.image.value = image_layer
    return widget


def test_predict_writes_its_own_layers_and_never_a_users(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    _, image, mask = kvasir_test[0]
    image_layer = viewer.add_image(image, name="polyp", rgb=True)
    painted = np.zeros(mask.shape, np.uint8)
    painted[10:40, 10:40] = 3
    user_labels = viewer.add_labels(painted.copy(), name="my labels")
    widget = make_widget(viewer, image_layer)
    assert widget.source.model.value == slicewise.DEFAULT_MODEL

    widget.predict.maps.value = True  # P(class) layers only when asked for
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: len(outputs(viewer)) == 1 and not widget.runner.running(), timeout=TIMEOUT_MS)

    labels = outputs(viewer)[0]
    assert labels.name == f"{slicewise.DEFAULT_MODEL} labels"
    assert dice_score(np.asarray(labels.data), mask) > 0.75
    probability = outputs(viewer, "probability:polyp")[0]
    assert probability.data.dtype == np.float32 and probability.data.shape == mask.shape
    np.testing.assert_array_equal(user_labels.data, painted)
    np.testing.assert_array_equal(image_layer.data, image)
    assert widget.source.device_info.value.startswith("CPU")


def test_follow_the_slice_predicts_each_viewed_slice_of_a_uint16_stack(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    stack = np.stack([kvasir_test[i][1][:128, :160] for i in range(4)]).astype(np.uint16) * 257
    image_layer = viewer.add_image(stack, name="stack", rgb=True, scale=(2.5, 1, 1))
    viewer.dims.set_current_step(0, 0)
    widget = make_widget(viewer, image_layer)
    widget.predict.follow.value = True
    qtbot.waitUntil(lambda: len(outputs(viewer)) == 1 and not widget.runner.running(), timeout=TIMEOUT_MS)

    viewer.dims.set_current_step(0, 2)
    qtbot.waitUntil(
        lambda: "slice 2" in widget.predict.status.value and not widget.runner.running(),
        timeout=TIMEOUT_MS,
    )
    assert outputs(viewer)[0].name == f"{slicewise.DEFAULT_MODEL} labels (slices 0, 2)"
    labels = outputs(viewer)[0]
    assert labels.data.shape == stack.shape[:3]
    assert tuple(labels.scale) == (2.5, 1, 1)
    expected = slicewise.predict(
        widget.state.models[(slicewise.DEFAULT_MODEL, "auto", ())], stack, slice_ref=SliceRef((2,))
    ).labels
    np.testing.assert_array_equal(labels.data[2], expected)
    assert not labels.data[1].any() and not labels.data[3].any()


def test_newest_slice_request_supersedes_older_ones(make_napari_viewer, qtbot, kvasir_test, monkeypatch):
    loads = []
    real_load = jobs.load_model
    monkeypatch.setattr(jobs, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    viewer = make_napari_viewer()
    stack = np.stack([kvasir_test[i % 8][1][:96, :96] for i in range(12)])
    image_layer = viewer.add_image(stack, name="stack", rgb=True)
    widget = make_widget(viewer, image_layer)
    widget.predict.maps.value = True
    widget.predict.follow.value = True
    for z in range(12):
        viewer.dims.set_current_step(0, z)
    qtbot.waitUntil(
        lambda: bool(outputs(viewer)) and "slice 11" in widget.predict.status.value and not widget.runner.running(),
        timeout=TIMEOUT_MS,
    )
    predicted = [
        z
        for z in range(12)
        if outputs(viewer)[0].data[z].any() or outputs(viewer, "probability:polyp")[0].data[z].any()
    ]
    assert predicted[-1] == 11 and len(predicted) < 12
    assert len(loads) == 1, "a superseded job must keep the model it loaded"


def test_grayscale_3d_volume_uses_the_slice_under_the_dims_point(make_napari_viewer, qtbot, data_dir):
    viewer = make_napari_viewer()
    volume = tifffile.imread(data_dir / "mni152_icbm2009a_3d" / "image_axial_zyx.tif")
    image_layer = viewer.add_image(volume, name="mni")
    widget = make_widget(viewer, image_layer)
    viewer.dims.set_current_step(0, 90)
    widget.predict.maps.value = True
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: len(outputs(viewer)) == 1 and not widget.runner.running(), timeout=TIMEOUT_MS)
    assert outputs(viewer)[0].name.endswith("(slice 90)")
    assert outputs(viewer, "probability:polyp")[0].data[90].any()


def test_unsafe_checkpoint_is_one_notification_and_changes_nothing(
    make_napari_viewer, qtbot, tmp_path, notifications, kvasir_test
):
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(kvasir_test[0][1], name="polyp", rgb=True)
    widget = make_widget(viewer, image_layer)
    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(b"\x80\x04\x95 not weights")
    widget.source.checkpoint.value = bad  # refused as it is opened: it never becomes a choice
    assert len(notifications) == 1 and "pickle" in notifications[0] and "\n" not in notifications[0]
    assert widget.source.model.value == slicewise.DEFAULT_MODEL and str(bad) not in widget.source.model.choices
    assert [layer.name for layer in viewer.layers] == ["polyp"]


def test_rgb_image_into_a_grayscale_checkpoint_is_one_notification(
    make_napari_viewer, qtbot, tiny_checkpoint, notifications, kvasir_test
):
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(kvasir_test[0][1], name="polyp", rgb=True)
    widget = make_widget(viewer, image_layer)
    widget.source.checkpoint.value = tiny_checkpoint
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(
        lambda: any("expects grayscale input" in m for m in notifications) and not widget.runner.running(),
        timeout=TIMEOUT_MS,
    )
    assert len(viewer.layers) == 1


def test_an_opened_checkpoint_stays_chosen_when_layers_change(make_napari_viewer, tiny_checkpoint, kvasir_test):
    """napari resets every dock widget's choices when a layer is added: the checkpoint must survive it."""
    viewer = make_napari_viewer()
    widget = make_widget(viewer, viewer.add_image(kvasir_test[0][1][..., 0], name="gray"))
    widget.source.checkpoint.value = tiny_checkpoint
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="a person's labels")
    widget.reset_choices()
    assert widget.source.model.value == str(tiny_checkpoint)
    assert widget.source.model.native.currentText() == str(tiny_checkpoint)


def test_demo_opens_the_sample_stack_and_shows_a_prediction(make_napari_viewer, qtbot):
    viewer, widget = open_demo(slicewise.DEFAULT_MODEL, viewer=make_napari_viewer())
    qtbot.waitUntil(lambda: len(outputs(viewer)) == 1 and not widget.runner.running(), timeout=TIMEOUT_MS)
    viewed = viewer.dims.current_step[0]
    assert widget.predict.follow.value and outputs(viewer)[0].name.endswith(f"(slice {viewed})")
    assert outputs(viewer)[0].data[viewed].any()
    assert viewer.layers["kvasir_seg test"].data.shape == (45, 256, 256, 3)
    assert viewer.layers["reference masks"] not in widget.edit.target.choices  # ground truth is not "your labels"


def test_nan_filled_image_is_one_notification_and_no_layer(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(np.full((64, 64), np.nan, np.float32), name="empty scan")
    widget = make_widget(viewer, image_layer)
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(
        lambda: any("no finite pixel values" in m for m in notifications) and not widget.runner.running(),
        timeout=TIMEOUT_MS,
    )
    assert [layer.name for layer in viewer.layers] == ["empty scan"]


def test_uncertainty_lands_as_its_own_hidden_layer(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(kvasir_test[0][1], name="polyp", rgb=True)
    widget = make_widget(viewer, image_layer)
    widget.predict.uncertainty.value = "tta"
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: bool(outputs(viewer, "uncertainty")) and not widget.runner.running(), timeout=TIMEOUT_MS)
    layer = outputs(viewer, "uncertainty")[0]
    assert layer.name == f"{slicewise.DEFAULT_MODEL} uncertainty" and not layer.visible
    assert layer.data.dtype == np.float32 and layer.data.min() >= 0.0 and layer.data.max() <= 1.0 and layer.data.any()
    assert "uncertainty" in widget.predict.status.value


def test_review_queue_ranks_a_stack_and_jumps_to_the_least_certain_slice(make_napari_viewer, qtbot, data_dir):
    from slicewise.io.samples import sample_stack

    viewer = make_napari_viewer()
    images, masks, _ = sample_stack("kvasir_seg", "test")
    image_layer = viewer.add_image(images[:8], name="stack", rgb=True)
    widget = make_widget(viewer, image_layer)
    widget.review.rank_button.native.click()
    qtbot.waitUntil(lambda: widget.review.queue is not None, timeout=TIMEOUT_MS)
    ranking = widget.review.queue.ranking
    assert len(ranking) == 8 and [s for _, s in ranking] == sorted((s for _, s in ranking), reverse=True)
    first = ranking[0][0].index[0]
    assert viewer.dims.current_step[0] == first
    assert outputs(viewer)[0].data.reshape(8, -1).any(axis=1).sum() >= 6  # every slice was predicted and shown
    viewer.keymap[KeyBinding.from_str("Shift+U")](viewer)  # the key binding, as napari calls it
    assert viewer.dims.current_step[0] == ranking[1][0].index[0]
    assert "6 left" in widget.review.queue_info.value


def test_explanation_lands_as_its_own_layer_and_cancel_stops_a_job(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(kvasir_test[0][1], name="polyp", rgb=True)
    widget = make_widget(viewer, image_layer)
    widget.predict.explain.value = "gradcam"
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(
        lambda: bool(outputs(viewer, "explanation:gradcam")) and not widget.runner.running(), timeout=TIMEOUT_MS
    )
    layer = outputs(viewer, "explanation:gradcam")[0]
    assert layer.name == f"{slicewise.DEFAULT_MODEL} gradcam of polyp" and layer.visible
    assert layer.data.shape == kvasir_test[0][2].shape and layer.data.min() >= 0.0 and layer.data.max() <= 1.0
    before = layer.data.copy()

    widget.predict.explain.value = "occlusion"
    widget.predict.predict_button.native.click()
    widget.predict.cancel_button.native.click()
    qtbot.waitUntil(lambda: not widget.runner.running(), timeout=TIMEOUT_MS)
    assert widget.predict.status.value == "cancelled"
    np.testing.assert_array_equal(outputs(viewer, "explanation:gradcam")[0].data, before)
    assert not outputs(viewer, "explanation:occlusion")


def test_a_foreign_model_folder_opens_with_the_class_names_the_person_gives(
    make_napari_viewer, qtbot, tmp_path, kvasir_test
):
    from slicewise._compat import ensure_torchvision_ops

    ensure_torchvision_ops()
    import segmentation_models_pytorch as smp

    network = smp.create_model(
        "Unet", encoder_name="resnet18", encoder_weights=None, classes=2, encoder_depth=3, decoder_channels=(32, 16, 8)
    )
    network.save_pretrained(tmp_path / "smp_unet")  # smp's own folder: config.json + model.safetensors
    viewer = make_napari_viewer()
    image_layer = viewer.add_image(kvasir_test[0][1], name="polyp", rgb=True)
    widget = make_widget(viewer, image_layer)
    widget.source.model_folder.value = tmp_path / "smp_unet"
    assert widget.source.model.value == str(tmp_path / "smp_unet")
    widget.source.classes.value = "background, lesion"
    widget.predict.maps.value = True
    widget.predict.predict_button.native.click()
    qtbot.waitUntil(lambda: len(outputs(viewer)) == 1 and not widget.runner.running(), timeout=TIMEOUT_MS)
    assert outputs(viewer, "probability:lesion")[0].data.shape == kvasir_test[0][2].shape
