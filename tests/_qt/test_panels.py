"""Each panel built alone from a DockState and a JobRunner in a real viewer; the dock's one close path."""

from __future__ import annotations

import numpy as np
import pytest
from app_model.types import KeyBinding

import slicewise
from slicewise._qt.dock import PANELS, SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._qt.panels.edit import EditPanel
from slicewise._qt.panels.model import ModelPanel
from slicewise._qt.panels.predict import PredictPanel
from slicewise._qt.panels.review import ReviewPanel
from slicewise._qt.runner import JobRunner
from slicewise._qt.state import DockState

TIMEOUT_MS = 60_000


def alone(viewer, panel):
    state, runner = DockState(viewer), JobRunner()
    return panel(state, runner), state, runner


@pytest.mark.parametrize("name", list(PANELS))
def test_every_panel_builds_from_the_state_alone_and_closes_cleanly(make_napari_viewer, name):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 16, 16), np.float32), name="scan")
    panel, state, runner = alone(viewer, PANELS[name])
    viewer.window.add_dock_widget(panel)
    assert panel.native is not None
    runner.close()
    state.close()
    assert state.closed and not runner.running()


def test_model_panel_and_state_follow_each_other(make_napari_viewer, tiny_checkpoint):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((16, 16), np.float32), name="scan")
    panel, state, _ = alone(viewer, ModelPanel)
    assert state.image is image and panel.model.value == slicewise.DEFAULT_MODEL == state.model
    assert panel.use.value.startswith("fast: follows the slice")  # the header's line on when to choose it
    panel.checkpoint.value = tiny_checkpoint
    assert state.model == str(tiny_checkpoint) and state.opened_models == (str(tiny_checkpoint),)
    state.model = slicewise.DEFAULT_MODEL
    assert panel.model.value == slicewise.DEFAULT_MODEL
    panel.classes.value = "background, lesion"
    assert state.classes == ("background", "lesion") and state.model_classes() == ()
    panel.device.value = "cpu"
    assert state.device == "cpu"


def test_predict_panel_alone_writes_the_proposal_into_the_state(make_napari_viewer, qtbot, kvasir_test):
    viewer = make_napari_viewer()
    panel, state, runner = alone(viewer, PredictPanel)
    state.image = viewer.add_image(kvasir_test[0][1], name="polyp", rgb=True)
    panel.predict_button.native.click()
    qtbot.waitUntil(lambda: state.proposal is not None and not runner.running(), timeout=TIMEOUT_MS)
    assert state.proposal.metadata[META_KEY]["role"] == "labels" and slicewise.DEFAULT_MODEL in panel.status.value


def test_edit_panel_alone_accepts_the_states_proposal_into_the_states_target(make_napari_viewer):
    viewer = make_napari_viewer()
    panel, state, _ = alone(viewer, EditPanel)
    proposal = np.zeros((8, 8), np.uint8)
    proposal[2:5, 2:5] = 1
    state.proposal = viewer.add_labels(proposal, name="m labels", metadata={META_KEY: {"role": "labels"}})
    state.target = viewer.add_labels(np.zeros((8, 8), np.uint8), name="mine")
    assert panel.target.value is state.target
    panel.accept_button.native.click()
    np.testing.assert_array_equal(state.target.data, proposal)
    panel.reject_button.native.click()
    assert state.proposal is None


def test_review_panel_double_click_runs_one_ranking_and_close_unbinds_its_key(
    make_napari_viewer, qtbot, kvasir_test, monkeypatch
):
    from slicewise._qt import jobs

    started = []
    real = jobs.rank_job

    def counted(*args):
        started.append(1)
        return (yield from real(*args))

    monkeypatch.setattr("slicewise._qt.panels.review.rank_job", counted)
    viewer = make_napari_viewer()
    panel, state, runner = alone(viewer, ReviewPanel)
    stack = np.stack([kvasir_test[i][1][:64, :64] for i in range(4)])
    state.image = viewer.add_image(stack, name="stack", rgb=True)
    panel.rank_button.native.click()
    panel.rank_button.native.click()  # a double click: the first ranking stops, the newest runs
    qtbot.waitUntil(lambda: panel.queue is not None and not runner.running(), timeout=TIMEOUT_MS)
    assert len(started) <= 2 and len(panel.queue.ranking) == 4
    assert KeyBinding.from_str("Shift+U") in viewer.keymap
    runner.close()
    state.close()
    assert KeyBinding.from_str("Shift+U") not in viewer.keymap


def test_closing_the_dock_quits_its_workers_unbinds_its_keys_and_ignores_late_results(
    make_napari_viewer, qtbot, kvasir_test
):
    viewer = make_napari_viewer()
    dock = SlicewiseDock(viewer)
    viewer.window.add_dock_widget(dock)
    dock.state.image = viewer.add_image(np.stack([kvasir_test[i][1][:64, :64] for i in range(6)]), rgb=True)
    dock.review.rank_button.native.click()
    assert dock.runner.running("rank")
    dock.close_dock()
    qtbot.waitUntil(lambda: not dock.runner.running(), timeout=TIMEOUT_MS)
    assert dock.review.queue is None  # the ranking that was cut short is never shown
    for key in ("Shift+U", "Shift+A"):
        assert KeyBinding.from_str(key) not in viewer.keymap
    dock.predict.predict_button.native.click()  # nothing starts after close
    assert not dock.runner.running()
