"""Point prompts in a real viewer: object and background clicks in a Points layer prompt a SAM-format
checkpoint; LiteMedSAM, trained with boxes only, refuses them in one sentence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._qt.panels.prompts import BACKGROUND
from slicewise._qt.prompt_layers import POINTS_KEY, points_on
from slicewise.core.prompting import describe_prompts, with_points
from slicewise.core.types import SliceRef
from slicewise.models.checkpoint import save_checkpoint
from slicewise.models.registry import build_model, make_spec

TIMEOUT_MS = 120_000
pytestmark = pytest.mark.usefixtures("one_thread")
TINY_SAM = {
    "img_size": 256,
    "patch_size": 16,
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 2,
    "window_size": 4,
    "global_attn_indexes": [1],
    "out_chans": 32,
    "mask_in_chans": 16,
    "decoder_depth": 2,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 8,
    "iou_head_hidden_dim": 32,
}


@pytest.fixture
def tiny_sam(tmp_path):
    """A small SAM (random weights) saved as a slicewise checkpoint: it takes boxes and points."""
    spec = make_spec("sam", class_names=("background", "object"), **TINY_SAM)
    spec = dataclasses.replace(spec, input=dataclasses.replace(spec.input, size=256))
    return save_checkpoint(tmp_path / "sam_tiny.safetensors", build_model(spec).state_dict(), spec, {})


def test_points_and_a_box_make_one_prompt_and_are_described():
    (box,) = with_points((), [(5.0, 6.0)], [1])
    assert box.points == ((5.0, 6.0),) and box.box is None
    from slicewise.core.prompting import Prompt

    joined = with_points((Prompt(box=(0, 0, 9, 9)),), [(5.0, 6.0), (1.0, 1.0)], [1, 0])
    assert len(joined) == 1 and joined[0].point_labels == (1, 0) and joined[0].box == (0, 0, 9, 9)
    assert describe_prompts(joined) == "1 box + 2 points"


def test_object_and_background_clicks_prompt_a_sam_checkpoint(make_napari_viewer, qtbot, tiny_sam, lite_medsam):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    image = viewer.add_image(rng.integers(0, 256, (2, 96, 128, 3), dtype=np.uint8), rgb=True, name="scan")
    dock = SlicewiseDock(viewer)
    dock.state.image = image
    dock.state.open_model(str(tiny_sam))
    prompts = dock.prompts
    prompts.prompt_model.value = str(tiny_sam)
    viewer.dims.set_current_step(0, 1)

    prompts.points_button.native.click()
    points = next(layer for layer in viewer.layers if layer.metadata.get(POINTS_KEY) == "scan")
    assert points.mode == "add" and viewer.layers.selection.active is points
    points.add([1, 40, 60])  # an object click on slice 1
    qtbot.waitUntil(lambda: "1 point on slice 1" in prompts.status.value, timeout=TIMEOUT_MS)
    proposal = next(lay for lay in viewer.layers if (lay.metadata.get(META_KEY) or {}).get("role") == "labels")
    assert proposal.data.shape == (2, 96, 128) and not proposal.data[0].any()

    prompts.point_kind.value = BACKGROUND
    points.add([1, 5, 5])
    qtbot.waitUntil(lambda: "2 points on slice 1" in prompts.status.value, timeout=TIMEOUT_MS)
    assert points_on(points, SliceRef((1,))) == (((60.0, 40.0), (5.0, 5.0)), (1, 0))
    np.testing.assert_allclose(points.face_color[1][:3], [1, 0, 0])  # a background point is red

    # LiteMedSAM was trained with boxes only: a point is refused in its one sentence
    dock.state.models[("lite_medsam", dock.state.device, ())] = lite_medsam
    prompts.prompt_model.value = "lite_medsam"
    points.add([1, 50, 50])
    qtbot.waitUntil(lambda: "takes box prompts only" in prompts.status.value, timeout=TIMEOUT_MS)
    assert "\n" not in prompts.status.value
    dock.close_dock()
