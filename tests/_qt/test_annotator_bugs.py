"""What an annotator hit in the viewer (issue 13), each reproduced in a real napari viewer (runs under Xvfb)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

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
