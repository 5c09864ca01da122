"""The CLI as a person runs it: real files in, label maps out, one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from PIL import Image

from slicewise.cli import main


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slicewise.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_predict_writes_uint8_label_maps_of_input_size(data_dir, tmp_path):
    images = data_dir / "kvasir_seg" / "images"
    stems = json.loads((data_dir / "kvasir_seg" / "split.json").read_text())["test"][:3]
    inputs = [str(images / f"{s}.png") for s in stems]
    assert main(["predict", *inputs, "--out", str(tmp_path), "--device", "cpu"]) == 0
    for stem, path in zip(stems, inputs, strict=True):
        written = Image.open(tmp_path / f"{stem}.png")
        assert written.mode == "L" and written.size == Image.open(path).size
        assert set(np.unique(np.asarray(written))) <= {0, 1}


def test_predict_a_tiff_stack_writes_a_label_stack(tmp_path, kvasir_test):
    stack = np.stack([kvasir_test[i][1][:96, :128] for i in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    assert main(["predict", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "out")]) == 0
    assert tifffile.imread(tmp_path / "out" / "stack.tif").shape == (3, 96, 128)


def test_predict_with_a_box_prompt_and_a_zarr_stack(data_dir, tmp_path, kvasir_test, capsys):
    import zarr

    stem, image, mask = kvasir_test[0]
    rows, cols = np.nonzero(mask)
    box = f"{cols.min()},{rows.min()},{cols.max()},{rows.max()}"
    source = data_dir / "kvasir_seg" / "images" / f"{stem}.png"
    reference = data_dir / "kvasir_seg" / "masks"
    args = ["predict", str(source), "--model", "lite_medsam", "--box", box, "--out", str(tmp_path), "--device", "cpu"]
    assert main([*args, "--reference", str(reference)]) == 0
    assert float(capsys.readouterr().out.split("mean Dice ")[1].split(",")[0]) > 0.9

    shape = (2, 96, 128, 3)
    store = zarr.open_array(tmp_path / "stack.zarr", mode="w", shape=shape, chunks=(1, *shape[1:]), dtype="u1")
    store[:] = np.stack([kvasir_test[i][1][:96, :128] for i in range(2)])
    assert main(["predict", str(tmp_path / "stack.zarr"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert tifffile.imread(tmp_path / "out" / "stack.tif").shape == (2, 96, 128)


def test_inspect_json_and_models_list(capsys):
    assert main(["inspect", "polyp_unet", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "unet" and info["classes"] == ["background", "polyp"]
    assert info["family"] == "monai" and "metrics" in info["provenance"]
    assert main(["models"]) == 0
    assert "polyp_unet" in capsys.readouterr().out
    assert main(["models", "--architectures"]) == 0
    listed = capsys.readouterr().out
    for name in ("unet", "attention_unet", "unetpp", "dynunet", "swin_unetr"):
        assert f"\n{name} " in f"\n{listed}"


def test_inspect_a_wheel_shipped_model_by_name(capsys):
    assert main(["inspect", "lite_medsam", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"] == "lite_medsam" and info["prompts"]
    assert info["provenance"]["weights"].startswith("packaged")


@pytest.mark.parametrize(
    ("make_input", "needle"),
    [
        (
            lambda d: (
                d.joinpath("model.safetensors").write_bytes(b"\x80\x04garbage")
                and ["inspect", str(d / "model.safetensors")]
            ),
            "pickle",
        ),
        (lambda d: ["predict", str(d / "missing.png"), "--out", str(d)], "does not exist"),
        (
            lambda d: d.joinpath("x.png").write_bytes(b"not a png") and ["predict", str(d / "x.png"), "--out", str(d)],
            "Cannot read x.png",
        ),
        (
            lambda d: (
                np.save(d / "nan.npy", np.full((32, 32), np.nan)) or ["predict", str(d / "nan.npy"), "--out", str(d)]
            ),
            "no finite pixel",
        ),
        (
            lambda d: (
                np.save(d / "rank.npy", np.zeros((2, 2, 2, 8, 8))) or ["predict", str(d / "rank.npy"), "--out", str(d)]
            ),
            "Expected a 2D slice or a 3D stack",
        ),
        (
            lambda d: ["predict", str(d), "--out", str(d / "o"), "--model", "nosuchmodel"],
            "No bundled model",
        ),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(tmp_path, make_input, needle):
    result = run_cli(*make_input(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("slicewise: error: ") and needle in lines[-1]
    assert all(line.startswith(("slicewise: error:", "model ")) for line in lines)


def test_demo_without_a_display_says_so_and_runs_headless(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = run_cli("demo", "--out", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    assert "No display found" in result.stderr.splitlines()[0]
    assert "45 images: mean Dice" in result.stdout
    mean_dice = float(result.stdout.split("mean Dice ")[1].split(",")[0])
    assert mean_dice > 0.7
    assert len(list(tmp_path.glob("*.png"))) == 45


def test_predict_writes_the_uncertainty_and_explanation_maps_beside_the_mask(tmp_path, kvasir_test):
    stem, image, _ = kvasir_test[0]
    Image.fromarray(image).save(tmp_path / f"{stem}.png")
    args = ["--uncertainty", "entropy", "--explain", "gradcam", "--target-class", "1"]
    assert main(["predict", str(tmp_path / f"{stem}.png"), "--out", str(tmp_path / "out"), *args]) == 0
    for extra in ("uncertainty", "explanation"):
        written = tifffile.imread(tmp_path / "out" / f"{stem}_{extra}.tif")
        assert written.shape == image.shape[:2] and written.dtype == np.float32
        assert written.min() >= 0.0 and written.max() <= 1.0


def test_explaining_a_class_the_model_does_not_have_is_one_line(tmp_path, kvasir_test):
    stem, image, _ = kvasir_test[0]
    Image.fromarray(image).save(tmp_path / f"{stem}.png")
    result = run_cli(
        "predict", str(tmp_path / f"{stem}.png"), "--out", str(tmp_path), "--explain", "saliency", "--target-class", "3"
    )
    assert result.returncode == 2 and "Target class 3 is not a foreground class" in result.stderr.splitlines()[-1]


def test_rank_orders_a_folder_of_images_most_uncertain_first(tmp_path, kvasir_test, capsys):
    for stem, image, _ in kvasir_test:
        Image.fromarray(image).save(tmp_path / f"{stem}.png")
    assert main(["rank", str(tmp_path), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    scores = [float(line.split()[0]) for line in lines]
    assert len(lines) == len(kvasir_test) and scores == sorted(scores, reverse=True) and scores[0] > scores[-1]


def test_rank_scores_each_slice_of_a_volume(data_dir, capsys):
    volume = data_dir / "pyradiomics_3d" / "breast1_image.nrrd"  # 21 slices
    assert main(["rank", str(volume), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 21 and {line.rsplit(" ", 1)[-1] for line in lines} == {str(z) for z in range(21)}
