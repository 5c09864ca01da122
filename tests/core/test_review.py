"""The review queue ranks real slices so that the worst predictions come first."""

import numpy as np
import pytest

from slicewise.core.metrics import dice_score
from slicewise.core.review import ReviewQueue, iter_rank_slices, stack_refs
from slicewise.core.types import SliceRef
from slicewise.errors import ImageError
from slicewise.io.samples import sample_stack


def run_ranking(model, stack, rgb):
    predictions = {}
    generator = iter_rank_slices(model, stack, rgb=rgb)
    try:
        while True:
            prediction = next(generator)
            predictions[prediction.slice_ref] = prediction
    except StopIteration as stop:
        return stop.value, predictions


def test_most_uncertain_slices_are_the_worst_predicted(native_size_model):
    images, masks, _ = sample_stack("kvasir_seg", "test")
    ranking, predictions = run_ranking(native_size_model, images, rgb=True)
    assert len(ranking) == len(images) == len(predictions)
    dice = {ref: dice_score(predictions[ref].labels, masks[ref.index[0]]) for ref, _ in ranking}
    ordered = [dice[ref] for ref, _ in ranking]
    assert np.mean(ordered[:10]) < np.mean(ordered[-10:]) - 0.1


def test_queue_hands_out_each_slice_once_most_uncertain_first():
    queue = ReviewQueue([(SliceRef((2,)), 0.9), (SliceRef((0,)), 0.5), (SliceRef((1,)), 0.1)])
    assert [queue.next()[0].index[0] for _ in range(3)] == [2, 0, 1]
    assert queue.next() is None and queue.remaining == 0


def test_a_2d_image_has_no_slices_to_rank():
    with pytest.raises(ImageError, match="needs a 3D stack"):
        stack_refs((256, 256, 3), rgb=True)


def test_rank_by_map_puts_the_slice_where_the_sides_differ_most_first():
    from slicewise.core.evaluation import disagreement
    from slicewise.core.review import rank_by_map

    a = np.zeros((3, 4, 4), np.uint8)
    b = np.zeros_like(a)
    a[0, :2] = b[0, :2] = 1  # slice 0: the same
    a[1, :2], b[1, 1:3] = 1, 1  # slice 1: half overlaps, Dice 0.5
    a[2, 0, 0] = 1  # slice 2: only A; Dice 0
    ranking = rank_by_map(disagreement(a, b))
    assert [(ref.index[0], round(score, 3)) for ref, score in ranking] == [(2, 1.0), (1, 0.5), (0, 0.0)]
    queue = ReviewQueue(ranking)
    assert queue.place(SliceRef((1,))) == (2, 0.5)
