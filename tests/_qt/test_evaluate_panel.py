"""The Evaluate section in a real viewer: the Kvasir sample stack against its reference masks,
a model compared with a person's labels, the table, the plot, the exports and the maps."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from qtpy.QtCore import Qt

from slicewise._qt.dock import SlicewiseDock
from slicewise._qt.layers import META_KEY
from slicewise._qt.panels.evaluate import ALL, VIEWED, EvaluatePanel
from slicewise._qt.runner import JobRunner
from slicewise._qt.state import DockState
from slicewise._sample_data import kvasir_test_stack
from slicewise.core.metrics import dice_score

TIMEOUT_MS = 120_000
pytestmark = pytest.mark.usefixtures("one_thread")


def layer_of(viewer, role):
    return next(lay for lay in viewer.layers if (lay.metadata.get(META_KEY) or {}).get("role") == role)


def test_evaluate_the_sample_stack_then_compare_the_model_with_a_persons_labels(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    for data, kwargs, kind in kvasir_test_stack():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    reference = viewer.layers["reference masks"]
    mine = viewer.add_labels(reference.data.copy(), name="my labels")
    mine.data[:5] = 0  # a person who has not labelled the first five slices yet
    dock = SlicewiseDock(viewer)
    panel = dock.evaluate
    dock.state.image = viewer.layers["kvasir_seg test"]
    assert panel.reference.value is reference  # the sample's reference masks, by their role
    panel.source_a.value = "polyp_unet"
    panel.scope.value = ALL

    panel.evaluate_button.native.click()
    qtbot.waitUntil(lambda: bool(panel.results) and not dock.runner.running(), timeout=TIMEOUT_MS)
    (result,) = panel.results
    assert len(result.per_slice) == 45 and result.unit == "px"
    expected = dice_score(result.labels[7], reference.data[7])
    assert result.dice()[next(r for r in result.slices if r.index == (7,))] == pytest.approx(expected)
    assert "pooled Dice" in panel.status.value and "HD95" in panel.status.value
    table = panel.table
    assert table.rowCount() == 45 and table.horizontalHeaderItem(4).text() == "hd95_px"
    errors = layer_of(viewer, "errors")
    assert errors.name == "errors: polyp_unet vs reference masks"
    assert "false positive" in panel.legend.value and errors.data.max() <= 3
    assert len(panel.figure.axes) == 2 and len(panel.figure.axes[0].lines) == 1

    table.sortByColumn(2, Qt.SortOrder.AscendingOrder)  # the worst Dice first
    worst = int(table.item(0, 0).text())
    panel._go_to_row(0)
    assert viewer.dims.current_step[0] == worst

    panel.export_csv(str(tmp_path / "table.csv"))
    panel.export_png(str(tmp_path / "plot.png"))
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert len(rows) == 47 and (tmp_path / "plot.png").stat().st_size > 5_000

    panel.source_b.value = mine
    panel.evaluate_button.native.click()
    qtbot.waitUntil(lambda: len(panel.results) == 2 and not dock.runner.running(), timeout=TIMEOUT_MS)
    comparison = panel.comparison
    assert comparison.b.name == "my labels" and comparison.dice_b[-1] == 1.0
    assert "Wilcoxon p = " in panel.status.value
    assert comparison.p_value < 0.05  # the model misses parts of polyps; the labels are the reference
    differences = [float(table.item(r, 3).text()) for r in range(table.rowCount())]
    assert differences == sorted(differences, reverse=True)
    disagreement = layer_of(viewer, "disagreement")
    assert disagreement.name == "disagreement: polyp_unet (A) vs my labels (B)"
    assert "my labels only" in panel.legend.value
    assert disagreement.get_status((3, 100, 100))["value"].split("; where: ")[-1] in (
        "neither",
        "polyp_unet only",
        "my labels only",
        "both",
    )
    assert len(panel.figure.axes[0].lines) == 2

    # the review queue ranks by the disagreement layer, then by the errors layer (no prediction)
    review = dock.review
    review.rank_by.value = disagreement
    review.rank_button.native.click()
    first = review.queue.ranking[0][0].index[0]
    assert viewer.dims.current_step[0] == first
    assert review.queue_info.value.startswith(f"slice {first}: 1 − Dice between the models")
    viewer.dims.set_current_step(0, (first + 1) % 45)  # moving on: the status names the new slice
    assert review.queue_info.value.startswith(f"slice {(first + 1) % 45}:")
    review.rank_by.value = errors
    review.rank_button.native.click()
    top, score = review.queue.ranking[0]
    assert score == pytest.approx(1 - min(result.dice().values())) and viewer.dims.current_step[0] == top.index[0]
    dock.close_dock()


def test_the_viewed_slice_and_bad_input_are_one_sentence(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    state, runner = DockState(viewer), JobRunner()
    panel = EvaluatePanel(state, runner)
    panel.evaluate_button.native.click()
    assert "Choose a reference labels layer" in notifications[-1]

    truth = np.zeros((3, 32, 32), np.uint8)
    truth[:, 8:20, 8:20] = 1
    viewer.add_labels(truth, name="truth")
    guess = viewer.add_labels(np.roll(truth, 4, axis=2), name="guess")
    assert panel.reference.value is viewer.layers["truth"]
    panel.source_a.value = guess
    panel.scope.value = VIEWED
    viewer.dims.set_current_step(0, 1)
    panel.evaluate_button.native.click()
    qtbot.waitUntil(lambda: bool(panel.results) and not runner.running(), timeout=TIMEOUT_MS)
    assert [ref.index for ref in panel.results[0].slices] == [(1,)]
    assert panel.results[0].pooled["dice"] == pytest.approx(2 * 8 * 12 / (2 * 144))
    panel.reference.value = viewer.add_labels(truth * 255, name="a 0/255 mask picture made labels")
    panel.evaluate_button.native.click()
    qtbot.waitUntil(
        lambda: panel.results[0].reference.startswith("a 0/255") and not runner.running(), timeout=TIMEOUT_MS
    )
    assert panel.results[0].pooled["dice"] == pytest.approx(2 * 8 * 12 / (2 * 144))  # its white is class 1

    viewer.add_labels(np.zeros((3, 16, 16), np.uint8), name="another image's labels")
    panel.source_a.value = viewer.layers["another image's labels"]
    panel.evaluate_button.native.click()
    qtbot.waitUntil(lambda: not runner.running(), timeout=TIMEOUT_MS)
    assert "has shape (3, 16, 16)" in notifications[-1] and "\n" not in notifications[-1]
    assert panel.status.value == notifications[-1]  # the status does not go on saying "evaluating…"
    runner.close()
    state.close()
