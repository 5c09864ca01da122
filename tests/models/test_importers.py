"""Foreign model formats, each written by the library that owns it, import, predict and convert.

Every test builds a tiny network with the owning library, saves it with that library's own
save function (transformers and smp ``save_pretrained``, MONAI ``init_bundle``, nnU-Net's
trainer checkpoint dict, ``torch.onnx.export``, ``torch.jit.save``), and checks that slicewise
reads the metadata, predicts what the original network computes, and converts to a slicewise
checkpoint that predicts the same.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import slicewise
from slicewise._compat import ensure_torchvision_ops
from slicewise.cli import main
from slicewise.core.preprocess import prepare
from slicewise.errors import CheckpointError
from slicewise.models.adapters.base import resize_logits
from slicewise.models.checkpoint import read_header
from slicewise.models.importers import ImportOptions, detect_format, import_model
from slicewise.models.sources import convert, load_foreign

pytestmark = pytest.mark.usefixtures("one_thread")

HEIGHT, WIDTH = 37, 53  # odd: the core pads to the divisor and crops back


def _image(channels: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    shape = (HEIGHT, WIDTH) if channels == 1 else (HEIGHT, WIDTH, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _check_import(
    path: Path,
    tmp_path: Path,
    original: Callable[[torch.Tensor], torch.Tensor],
    *,
    channels: int,
    options: ImportOptions | None = None,
) -> slicewise.LoadedModel:
    """The imported model computes the original's logits, and its converted checkpoint predicts the same."""
    model = load_foreign(path, device="cpu", options=options) if options else slicewise.load_model(path, "cpu")
    image = _image(channels)
    batch = torch.from_numpy(prepare(image, model.spec.input)).unsqueeze(0)
    with torch.inference_mode():
        expected = resize_logits(original(batch), batch.shape[-2:])
        torch.testing.assert_close(model.adapter.logits(model.module, batch), expected, rtol=1e-4, atol=1e-4)
    prediction = slicewise.predict(model, image)
    assert prediction.probabilities.shape == (model.spec.output.num_classes, HEIGHT, WIDTH)
    if model.spec.arch in ("onnx", "torchscript"):
        return model
    out = convert(path, tmp_path / "converted.safetensors", options)
    assert read_header(out).spec == model.spec
    assert read_header(out).provenance["imported_from"]["format"] == detect_format(path)
    converted = slicewise.load_model(out, "cpu")
    np.testing.assert_allclose(
        slicewise.predict(converted, image).probabilities, prediction.probabilities, rtol=1e-5, atol=1e-5
    )
    return model


def _inspect(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["inspect", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_huggingface_segformer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_torchvision_ops()
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(
        num_channels=1,
        hidden_sizes=[8, 16, 32, 64],
        num_attention_heads=[1, 1, 2, 2],
        decoder_hidden_size=16,
        mlp_ratios=[2, 2, 2, 2],
        id2label={0: "background", 1: "liver", 2: "tumour"},
    )
    network = SegformerForSemanticSegmentation(config).eval()
    network.save_pretrained(tmp_path / "segformer")

    model = _check_import(tmp_path / "segformer", tmp_path, lambda x: network(pixel_values=x).logits, channels=1)
    assert model.spec.arch == "segformer"
    assert model.spec.init_kwargs["mlp_ratios"] == [2, 2, 2, 2]
    info = _inspect(tmp_path / "segformer", capsys)
    assert info["format"] == "huggingface" and info["architecture"] == "segformer"
    assert info["classes"] == ["background", "liver", "tumour"]
    assert info["input"]["channels"] == 1 and info["assumed"] == ["normalization"]


def test_huggingface_upernet_drops_the_auxiliary_head(tmp_path: Path) -> None:
    ensure_torchvision_ops()
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    backbone = ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    config = UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_channels=8, num_labels=2)
    network = UperNetForSemanticSegmentation(config).eval()
    network.save_pretrained(tmp_path / "upernet")

    model = _check_import(tmp_path / "upernet", tmp_path, lambda x: network(pixel_values=x).logits, channels=3)
    assert model.spec.arch == "upernet_convnext"
    assert "classes" in import_model(tmp_path / "upernet").assumed  # LABEL_0/LABEL_1 are placeholders


def test_huggingface_dpt_on_dinov2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_torchvision_ops()
    from transformers import Dinov2Config, DPTConfig, DPTForDepthEstimation

    from slicewise.models.adapters.transformers import DPTDinov2ForSemanticSegmentation

    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=98,
        num_channels=1,
        out_indices=[1, 2],
        reshape_hidden_states=False,
    )
    config = DPTConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[16, 32],
        reassemble_factors=[2, 0.5],
        fusion_hidden_size=16,
        id2label={0: "background", 1: "kidney"},
    )
    network = DPTDinov2ForSemanticSegmentation(config).eval()
    network.save_pretrained(tmp_path / "dpt")

    model = _check_import(tmp_path / "dpt", tmp_path, network, channels=1)
    assert model.spec.arch == "dpt_dinov2" and model.spec.input.divisor == 14
    assert model.spec.init_kwargs["reassemble_factors"] == [2, 0.5]
    assert model.spec.init_kwargs["backbone_config"]["mlp_ratio"] == 2
    assert model.spec.init_kwargs["backbone_config"]["out_indices"] == [1, 2]
    info = _inspect(tmp_path / "dpt", capsys)
    assert info["architecture"] == "dpt_dinov2" and info["classes"] == ["background", "kidney"]
    assert info["input"]["channels"] == 1

    DPTForDepthEstimation(config).save_pretrained(tmp_path / "depth")  # what the Hub's DINOv2 DPTs are
    with pytest.raises(CheckpointError, match="depth-estimation dpt model on dinov2.*DINOv2 backbone"):
        import_model(tmp_path / "depth")


def test_smp_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ensure_torchvision_ops()
    import segmentation_models_pytorch as smp

    network = smp.create_model(
        "Unet",
        encoder_name="resnet18",
        encoder_weights=None,
        in_channels=3,
        classes=2,
        encoder_depth=3,
        decoder_channels=(32, 16, 8),
    ).eval()
    network.save_pretrained(tmp_path / "smp")

    options = ImportOptions(classes=("background", "polyp"), normalization="zscore")
    model = _check_import(tmp_path / "smp", tmp_path, network, channels=3, options=options)
    assert model.spec.arch == "smp" and model.spec.init_kwargs["encoder_name"] == "resnet18"
    assert model.spec.input.normalization == "zscore"
    info = _inspect(tmp_path / "smp", capsys, "--classes", "background,polyp")
    assert info["classes"] == ["background", "polyp"] and info["assumed"] == ["normalization"]
    assert main(["convert", str(tmp_path / "smp"), "-o", str(tmp_path / "cli.safetensors")]) == 0
    assert read_header(tmp_path / "cli.safetensors").provenance["imported_from"]["assumed"] == [
        "classes",
        "normalization",
    ]

    config = json.loads((tmp_path / "smp" / "config.json").read_text())
    del config["classes"]  # a damaged folder: one sentence, no traceback
    (tmp_path / "smp" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="metadata is incomplete or malformed") as raised:
        import_model(tmp_path / "smp")
    assert "\n" not in str(raised.value)


def _monai_unet() -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=[4, 8, 16], strides=[2, 2], num_res_units=1)


def test_monai_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monai.bundle.scripts import init_bundle

    network = _monai_unet().eval()
    inference = {
        "num_classes": 3,
        "network_def": {
            "_target_": "UNet",
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": "@num_classes",
            "channels": [4, 8, 16],
            "strides": [2, 2],
            "num_res_units": 1,
        },
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "ScaleIntensityd", "keys": "image"},
            ],
        },
        "postprocessing": {"_target_": "Compose", "transforms": [{"_target_": "Activationsd", "softmax": True}]},
    }
    metadata = {
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude", "num_channels": 1, "spatial_shape": [96, 96]}},
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": 3,
                    "channel_def": {"0": "background", "1": "kidney", "2": "cyst"},
                }
            },
        }
    }
    bundle = tmp_path / "bundle"
    init_bundle(bundle, network=network, metadata_str=metadata, inference_str=inference)

    model = _check_import(bundle, tmp_path, network, channels=1)
    assert model.spec.arch == "unet" and model.spec.init_kwargs["num_res_units"] == 1
    assert model.spec.input.normalization == "percentile" and model.spec.input.percentiles == (0.0, 100.0)
    info = _inspect(bundle, capsys)
    assert info["format"] == "monai_bundle" and info["classes"] == ["background", "kidney", "cyst"]
    assert info["assumed"] == []


def test_monai_bundle_refuses_python_expressions_and_3d(tmp_path: Path) -> None:
    from monai.bundle.scripts import init_bundle

    network = {"_target_": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2}
    for name, definition in {
        "code": {**network, "channels": "$[4 * i for i in (1, 2)]"},
        "3d": {**network, "spatial_dims": 3, "channels": [4, 8], "strides": [2]},
    }.items():
        init_bundle(tmp_path / name, network=None, inference_str={"network_def": definition})
        (tmp_path / name / "models").mkdir(exist_ok=True)
        torch.save({}, tmp_path / name / "models" / "model.pt")
        with pytest.raises(CheckpointError, match="Python code" if name == "code" else "spatial_dims 2"):
            slicewise.load_model(tmp_path / name, "cpu")


def _nnunet_plans() -> dict:
    """A 2d configuration laid out as nnU-Net v2's ExperimentPlanner writes it, with tiny features."""
    return {
        "dataset_name": "Dataset042_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
        "original_median_shape_after_transp": [1, 64, 64],
        "image_reader_writer": "NaturalImage2DIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            "2d": {
                "data_identifier": "nnUNetPlans_2d",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 12,
                "patch_size": [64, 64],
                "median_image_size_in_voxels": [64.0, 64.0],
                "spacing": [1.0, 1.0],
                "normalization_schemes": ["ZScoreNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {
                        "n_stages": 4,
                        "features_per_stage": [4, 8, 16, 32],
                        "conv_op": "torch.nn.modules.conv.Conv2d",
                        "kernel_sizes": [[3, 3], [3, 3], [3, 3], [3, 3]],
                        "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
                        "n_conv_per_stage": [2, 2, 2, 2],
                        "n_conv_per_stage_decoder": [2, 2, 2],
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": True,
            }
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 255.0, "mean": 56.6, "median": 50.0, "min": 0.0, "percentile_00_5": 4.0, "std": 38.1}
        },
    }


def _nnunet_folder(tmp_path: Path, extra: dict | None = None) -> tuple[Path, torch.nn.Module]:
    """A trained-model folder as nnU-Net v2 writes it: plans, dataset.json and the trainer's checkpoint dict."""
    import pydoc

    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    plans = _nnunet_plans()
    dataset = {
        "channel_names": {"0": "angiography"},
        "labels": {"background": 0, "vessel": 1, "stenosis": 2},
        "numTraining": 10,
        "file_ending": ".png",
    }
    architecture = plans["configurations"]["2d"]["architecture"]
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture["_kw_requires_import"]:  # as nnU-Net's get_network_from_plans does
        kwargs[key] = pydoc.locate(kwargs[key]) if kwargs[key] is not None else None
    network = PlainConvUNet(input_channels=1, num_classes=3, deep_supervision=True, **kwargs)
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    network(torch.rand(2, 1, 64, 64))[0].mean().backward()
    optimizer.step()
    root = tmp_path / "Dataset042_Tiny" / "nnUNetTrainer__nnUNetPlans__2d"
    (root / "fold_0").mkdir(parents=True)
    (root / "plans.json").write_text(json.dumps(plans, indent=4))
    (root / "dataset.json").write_text(json.dumps(dataset, indent=4))
    checkpoint = {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {
            "mean_fg_dice": [np.float64(0.41)],
            "ema_fg_dice": [np.float64(0.41)],
            "dice_per_class_or_region": [[0.5, 0.32]],
            "train_losses": [np.float32(-0.2)],
            "val_losses": [np.float32(-0.1)],
            "lrs": [0.01],
            "epoch_start_timestamps": [1.7e9],
            "epoch_end_timestamps": [1.7e9 + 30],
        },
        "_best_ema": np.float64(0.41),
        "current_epoch": 1,
        "init_args": {
            "plans": plans,
            "configuration": "2d",
            "fold": 0,
            "dataset_json": dataset,
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1),
        **(extra or {}),
    }
    torch.save(checkpoint, root / "fold_0" / "checkpoint_final.pth")
    network.decoder.deep_supervision = False  # as nnU-Net's predictor runs it
    return root, network.eval()


def test_nnunet_v2_2d_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, network = _nnunet_folder(tmp_path)
    model = _check_import(root, tmp_path, network, channels=1)
    assert model.spec.arch == "nnunet" and model.spec.input.normalization == "zscore"
    assert model.spec.input.divisor == 8
    info = _inspect(root / "fold_0", capsys)
    assert info["format"] == "nnunet" and info["classes"] == ["background", "vessel", "stenosis"]
    assert info["details"]["trainer"] == "nnUNetTrainer" and info["details"]["channel_names"] == ["angiography"]
    assert info["assumed"] == []


def test_nnunet_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    root, _ = _nnunet_folder(tmp_path, extra={"args": argparse.Namespace(lr=0.1)})
    with pytest.raises(CheckpointError, match="could run code") as raised:
        slicewise.load_model(root, "cpu")
    assert "\n" not in str(raised.value)


def test_onnx_runs_but_does_not_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network = _monai_unet().eval()
    path = tmp_path / "unet.onnx"
    torch.onnx.export(
        network,
        (torch.rand(1, 1, 32, 32),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
        dynamo=False,
    )
    options = ImportOptions(classes=("background", "a", "b"), normalization="percentile")
    model = _check_import(path, tmp_path, network, channels=1, options=options)
    assert model.spec.input.channels == 1 and model.spec.output.class_names == ("background", "a", "b")
    info = _inspect(path, capsys)
    assert info["format"] == "onnx" and info["assumed"] == ["classes", "normalization"]
    assert not info["convertible"]
    assert main(["convert", str(path), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "cannot become a slicewise checkpoint" in capsys.readouterr().err

    fixed = tmp_path / "fixed_batch.onnx"  # the export default: a batch of exactly one
    spatial = {"image": {2: "h", 3: "w"}, "logits": {2: "h", 3: "w"}}
    torch.onnx.export(
        network,
        (torch.rand(1, 1, 32, 32),),
        str(fixed),
        dynamic_axes=spatial,
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
    )
    tta = slicewise.predict(
        slicewise.load_model(fixed, "cpu"), np.random.default_rng(0).random((40, 56)), uncertainty="tta"
    )
    assert tta.uncertainty.shape == (40, 56)  # the 8 flipped and rotated copies ran one by one


def test_torchscript_needs_explicit_permission(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    network = _monai_unet().eval()
    path = tmp_path / "unet.pt"
    torch.jit.save(torch.jit.trace(network, torch.rand(1, 1, 32, 32)), path)
    assert detect_format(path) == "torchscript"
    with pytest.raises(CheckpointError, match="runs code stored in the file"):
        slicewise.load_model(path, "cpu")
    assert main(["inspect", str(path)]) == 2
    assert "--allow-torchscript" in capsys.readouterr().err
    _check_import(path, tmp_path, network, channels=1, options=ImportOptions(allow_torchscript=True))
    assert _inspect(path, capsys, "--allow-torchscript")["input"]["channels"] == 1
    trusted = slicewise.load_model(path, "cpu", allow_torchscript=True)
    assert slicewise.predict(trusted, np.zeros((32, 40), np.float32)).labels.shape == (32, 40)


def test_timm_classifier_points_to_the_encoder_option(tmp_path: Path) -> None:
    ensure_torchvision_ops()
    import timm
    from timm.models import save_for_hf

    save_for_hf(timm.create_model("resnet18", num_classes=4), tmp_path / "timm")
    assert detect_format(tmp_path / "timm") == "timm"
    with pytest.raises(CheckpointError, match="no segmentation head.*timm_unet"):
        slicewise.load_model(tmp_path / "timm", "cpu")


def test_unknown_files_keep_the_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    assert detect_format(path) is None
    with pytest.raises(CheckpointError, match="slicewise loads only safetensors files"):
        slicewise.load_model(path, "cpu")
    with pytest.raises(CheckpointError, match="not a format slicewise can import"):
        import_model(path)
