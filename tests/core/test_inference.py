from dataclasses import replace

import numpy as np

import slicewise
from slicewise.core.inference import iter_predict
from slicewise.core.metrics import overlap_counts
from slicewise.core.types import Progress, SliceRef
from slicewise.models.loaded import from_state


def test_default_model_segments_real_polyps(default_model, kvasir_test):
    intersection = total = 0
    for _, image, mask in kvasir_test:
        prediction = slicewise.predict(default_model, image)
        assert prediction.labels.shape == mask.shape and prediction.labels.dtype == np.uint8
        assert prediction.probabilities.shape == (2, *mask.shape)
        assert prediction.probabilities.dtype == np.float32
        np.testing.assert_allclose(prediction.probabilities.sum(0), 1.0, atol=1e-5)
        i, t = overlap_counts(prediction.labels, mask, 2)
        intersection, total = intersection + i, total + t
    assert 2 * intersection / total > 0.75


def test_same_labels_for_uint8_uint16_and_float(default_model, kvasir_test):
    image = kvasir_test[1][1]
    reference = slicewise.predict(default_model, image).labels
    for variant in (image.astype(np.uint16) * 257, image.astype(np.float32) / 255):
        assert (slicewise.predict(default_model, variant).labels != reference).mean() < 0.001


def test_slice_of_a_stack_matches_the_2d_image(default_model, kvasir_test):
    images = [kvasir_test[i][1][:128, :128] for i in range(3)]
    stack = np.stack(images)
    prediction = slicewise.predict(default_model, stack, slice_ref=SliceRef((2,)))
    np.testing.assert_array_equal(prediction.labels, slicewise.predict(default_model, images[2]).labels)
    assert prediction.slice_ref == SliceRef((2,))


def test_iter_predict_reports_progress_then_returns(default_model, kvasir_test):
    generator = iter_predict(default_model, kvasir_test[0][1])
    stages = []
    try:
        while True:
            step = next(generator)
            assert isinstance(step, Progress)
            stages.append(step.stage)
    except StopIteration as stop:
        assert stop.value.labels.shape == kvasir_test[0][2].shape
    assert stages == ["prepare", "forward", "postprocess"]


def test_grayscale_model_predicts_odd_sizes(tiny_checkpoint):
    model = slicewise.load_model(tiny_checkpoint, device="cpu")
    prediction = slicewise.predict(model, np.random.default_rng(0).integers(0, 4000, (37, 53), dtype=np.uint16))
    assert prediction.labels.shape == (37, 53) and prediction.labels.max() <= 2
    assert prediction.probabilities.shape == (3, 37, 53)


def test_a_model_trained_at_a_smaller_size_returns_maps_at_the_slice_size(default_model, kvasir_test):
    spec = replace(default_model.spec, input=replace(default_model.spec.input, size=128))
    half = from_state(spec, default_model.module.state_dict(), device="cpu")
    image, truth = kvasir_test[0][1], kvasir_test[0][2]
    prediction = slicewise.predict(half, image, uncertainty="entropy", explain="gradcam")
    assert prediction.labels.shape == truth.shape
    assert prediction.probabilities.shape == (2, *truth.shape)
    assert prediction.uncertainty.shape == truth.shape and prediction.explanation.shape == truth.shape
    np.testing.assert_allclose(prediction.probabilities.sum(0), 1.0, atol=1e-4)
