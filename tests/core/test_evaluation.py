"""Per-slice evaluation and comparison against hand-computed values, and against slicewise-train."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from scipy.stats import wilcoxon

from slicewise.core.evaluation import (
    A_ONLY,
    B_ONLY,
    BOTH,
    OTHER_CLASS,
    agreement_dice,
    compare,
    disagreement,
    evaluate,
    iter_evaluate_files,
    read_pairs,
    table_columns,
    to_csv,
)
from slicewise.core.inference import predict, run_to_end
from slicewise.core.metrics import dice_score
from slicewise.core.types import SliceRef
from slicewise.errors import ImageError


@pytest.fixture
def stack() -> tuple[np.ndarray, np.ndarray]:
    """Three 10×10 slices: a 4×4 square predicted one row low; nothing on either; a missed square."""
    reference = np.zeros((3, 10, 10), np.uint8)
    reference[0, 2:6, 2:6] = 1
    reference[2, 2:6, 2:6] = 1
    predicted = np.zeros_like(reference)
    predicted[0, 3:7, 2:6] = 1
    return predicted, reference


def test_a_square_one_row_off_scores_by_hand_in_pixels(stack):
    predicted, reference = stack
    result = evaluate(predicted[0], reference[0])
    (row,) = result.rows
    # 12 of 16 pixels overlap: Dice 24/32, IoU 12/20; the boundary is at most one pixel away
    assert row.scores == pytest.approx(
        {"dice": 0.75, "iou": 0.6, "precision": 0.75, "recall": 0.75, "hd95": 1.0, "nsd": 1.0}
    )
    assert result.unit == "px" and result.tolerance == 2.0
    assert result.slices == [SliceRef()] and result.label(SliceRef()) == "2D"


def test_a_stack_pools_counts_and_averages_slices(stack):
    predicted, reference = stack
    result = evaluate(predicted, reference)
    assert [result.dice()[SliceRef((z,))] for z in range(3)] == pytest.approx([0.75, 1.0, 0.0])
    # pooled: TP 12, FP 4, FN 4 + 16 → Dice 24/48
    assert result.pooled["dice"] == pytest.approx(0.5)
    assert result.pooled["iou"] == pytest.approx(12 / 36)
    assert result.mean["dice"] == pytest.approx(1.75 / 3)
    # an empty slice on both sides is perfect (HD95 0); a missed object is the image diagonal
    assert result.per_slice[SliceRef((1,))]["hd95"] == 0.0
    assert result.per_slice[SliceRef((2,))]["hd95"] == pytest.approx(math.hypot(10, 10))


def test_spacing_puts_distances_in_its_units(stack):
    predicted, reference = stack
    # z 3 mm, rows 2 mm, columns 0.5 mm; NSD within 1 mm
    result = evaluate(predicted, reference, spacing=(3.0, 2.0, 0.5), tolerance=1.0)
    assert result.unit == "mm" and result.tolerance == 1.0
    first = result.per_slice[SliceRef((0,))]
    assert first["hd95"] == pytest.approx(2.0)  # one row = 2 mm
    # the 4 boundary pixels of each square's far edge are 2 mm away, the other 8 within 1 mm: 16/24
    assert first["nsd"] == pytest.approx(16 / 24, abs=1e-6)
    assert result.per_slice[SliceRef((2,))]["hd95"] == pytest.approx(math.hypot(20, 5))
    assert table_columns(result.unit)[5] == "hd95_mm"
    assert "hd95_mm" in to_csv([result]).splitlines()[0]


def test_default_tolerance_is_two_pixels_of_the_coarser_side(stack):
    predicted, reference = stack
    result = evaluate(predicted, reference, spacing=(2.0, 0.5))
    assert result.tolerance == 4.0 and result.per_slice[SliceRef((0,))]["nsd"] == pytest.approx(1.0)
    assert evaluate(predicted, reference, spacing=(1, 1, 1)).unit == "px"


def test_every_class_gets_a_row_and_the_slice_figure_averages_those_present():
    reference = np.zeros((8, 8), np.uint8)
    reference[:4, :4] = 1
    reference[4:, 4:] = 2
    predicted = reference.copy()
    predicted[4:, 4:] = 0  # class 2 missed
    result = evaluate(predicted, reference)
    assert [(row.class_name, row.scores["dice"]) for row in result.rows] == [("class 1", 1.0), ("class 2", 0.0)]
    assert result.per_slice[SliceRef()]["dice"] == pytest.approx(0.5)


def test_comparing_two_predictions_pairs_slices_and_maps_disagreement(stack):
    predicted, reference = stack
    other = reference.copy()  # B: perfect on slices 0 and 2
    a, b = evaluate(predicted, reference, name="A"), evaluate(other, reference, name="B")
    comparison = compare(a, b)
    assert comparison.order[0] == SliceRef((2,))  # |1.0 - 0.0| first
    assert comparison.order[-1] == SliceRef((1,))
    expected = wilcoxon([0.0, 0.75, 1.0], [1.0, 1.0, 1.0]).pvalue
    assert comparison.p_value == pytest.approx(expected)
    assert "A 0.583 vs B 1.000" in comparison.sentence()
    assert compare(a, a).p_value == 1.0


def test_disagreement_map_says_a_only_b_only_both():
    a = np.array([[1, 1, 0, 2]], np.uint8)
    b = np.array([[1, 0, 1, 1]], np.uint8)
    np.testing.assert_array_equal(disagreement(a, b), [[BOTH, A_ONLY, B_ONLY, OTHER_CLASS]])
    # Dice between A and B: 2 × 1 agreeing pixel over 3 + 3 foreground pixels
    assert agreement_dice(disagreement(a, b)) == pytest.approx(2 / 6)
    assert agreement_dice(np.zeros((2, 2), np.uint8)) == 1.0


@pytest.mark.parametrize(
    ("predicted", "reference", "words"),
    [
        (np.zeros((3, 8, 8), np.uint8), np.ones((2, 8, 8), np.uint8), "has shape"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "holds no labels"),
    ],
)
def test_bad_input_is_one_sentence(predicted, reference, words):
    with pytest.raises(ImageError, match=words) as raised:
        evaluate(predicted, reference)
    assert "\n" not in str(raised.value)


def test_a_model_is_scored_on_the_slices_asked_and_keeps_its_labels(default_model, kvasir_test):
    images = np.stack([image[:143, :225] for _, image, _ in kvasir_test[:3]])
    masks = np.stack([mask[:143, :225] for _, _, mask in kvasir_test[:3]])
    result = evaluate(default_model, masks, image=images, rgb=True, slices=[SliceRef((1,))])
    assert list(result.per_slice) == [SliceRef((1,))] and result.name == default_model.name
    assert result.labels.shape == masks.shape and result.labels[1].any() and not result.labels[0].any()
    alone = predict(default_model, images[1]).labels  # what the widget's Predict gives on that slice
    np.testing.assert_array_equal(result.labels[1], alone)
    assert result.per_slice[SliceRef((1,))]["dice"] == pytest.approx(dice_score(alone, masks[1]))
    with pytest.raises(ImageError, match="has class 3"):
        evaluate(default_model, masks * 3, image=images, rgb=True)


def test_folder_evaluation_matches_slicewise_train_on_a_shared_split(default_model, data_dir, tmp_path):
    """The same pooled Dice as ``slicewise-train evaluate`` on the first six Kvasir-SEG test images."""
    from slicewise_train.evaluate import evaluate as train_evaluate

    source = data_dir / "kvasir_seg"
    stems = json.loads((source / "split.json").read_text())["test"][:6]
    root = tmp_path / "kvasir_seg"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
        for stem in stems:
            shutil.copy(source / folder / f"{stem}.png", root / folder / f"{stem}.png")
    (root / "split.json").write_text(json.dumps({"test": stems}))

    trained = train_evaluate(default_model, root, "test")
    ours = run_to_end(iter_evaluate_files(default_model, read_pairs(root / "images", root / "masks")))
    assert ours.pooled["dice"] == pytest.approx(trained.pooled_dice, abs=1e-9)
    assert ours.mean["dice"] == pytest.approx(trained.mean_dice, abs=1e-9)
    assert ours.mean["hd95"] == pytest.approx(trained.scores.per_image_mean["hd95"], abs=1e-6)
    assert [ours.label(ref) for ref in ours.slices] == stems
