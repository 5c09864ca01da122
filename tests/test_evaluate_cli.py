"""``slicewise evaluate``: models against reference masks on the command line, through the widget's core."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from slicewise.cli import main


@pytest.fixture
def folders(data_dir, tmp_path):
    """Three Kvasir-SEG test images and their masks in images/ and masks/."""
    source = data_dir / "kvasir_seg"
    stems = json.loads((source / "split.json").read_text())["test"][:3]
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        for stem in stems:
            shutil.copy(source / folder / f"{stem}.png", tmp_path / folder / f"{stem}.png")
    return tmp_path / "images", tmp_path / "masks", stems


def test_evaluate_two_models_prints_json_and_writes_the_table(folders, tmp_path, capsys):
    images, masks, stems = folders
    table = tmp_path / "scores.csv"
    argv = ["evaluate", "polyp_unet", "polyp_unet", "--images", str(images), "--reference", str(masks)]
    assert main([*argv, "--json", "--csv", str(table), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    first, second = result["evaluations"]
    assert first["slices"] == 3 and first["units"]["hd95"] == "px"
    assert 0 < first["pooled"]["dice"] <= 1 and first["pooled"] == second["pooled"]
    assert result["comparisons"][0]["wilcoxon_p"] == 1.0  # a model against itself never differs
    rows = list(csv.DictReader(table.open()))
    assert [row["slice"] for row in rows[:3]] == stems and "hd95_px" in rows[0]
    assert rows[-1]["slice"] == "mean" and rows[-2]["slice"] == "pooled"

    assert main(argv[:2] + argv[3:]) == 0
    assert "pooled Dice" in capsys.readouterr().out


def test_black_and_white_references_score_as_their_label_maps(folders, tmp_path, capsys):
    """A reference saved as a 0/255 picture scores a model as its 0/1 label map does."""
    import numpy as np
    from PIL import Image

    images, masks, stems = folders
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for stem in stems:
        Image.fromarray(np.asarray(Image.open(masks / f"{stem}.png")) * np.uint8(255)).save(pictures / f"{stem}.png")
    pooled = []
    for reference in (masks, pictures):
        argv = ["evaluate", "polyp_unet", "--images", str(images), "--reference", str(reference), "--json"]
        assert main([*argv, "--device", "cpu"]) == 0
        pooled.append(json.loads(capsys.readouterr().out)["evaluations"][0]["pooled"])
    assert pooled[0] == pooled[1] and pooled[0]["dice"] > 0.5


def test_references_beside_their_images_with_a_mask_suffix_are_found(folders, tmp_path, capsys):
    images, masks, stems = folders
    for stem in stems:
        shutil.copy(masks / f"{stem}.png", images / f"{stem}_mask.png")
    assert main(["evaluate", "polyp_unet", "--images", str(images), "--reference", str(images), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"][0]["slices"] == 3  # the masks are not scored


def test_predict_scores_against_suffixed_references_and_names_a_missing_one(folders, tmp_path, capsys):
    images, masks, stems = folders
    suffixed = tmp_path / "suffixed"
    suffixed.mkdir()
    for stem in stems:
        shutil.copy(masks / f"{stem}.png", suffixed / f"{stem}_mask.png")
    argv = ["predict", str(images), "--model", "polyp_unet", "--out", str(tmp_path / "out"), "--device", "cpu"]
    assert main([*argv, "--reference", str(suffixed)]) == 0
    assert "3 images: mean Dice" in capsys.readouterr().out
    (suffixed / f"{stems[1]}_mask.png").unlink()
    assert main([*argv, "--reference", str(suffixed)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the line naming the model
    assert error.startswith("slicewise: error:") and f"has no reference for {stems[1]}.png" in error


def test_evaluate_a_volume_reports_millimetres(data_dir, tmp_path, tiny_checkpoint, capsys):
    volumes = data_dir / "pyradiomics_3d"
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    shutil.copy(volumes / "breast1_image.nrrd", tmp_path / "images" / "breast1.nrrd")
    shutil.copy(volumes / "breast1_label.nrrd", tmp_path / "masks" / "breast1.nrrd")
    argv = ["evaluate", str(tiny_checkpoint), "--images", str(tmp_path / "images"), "--reference"]
    assert main([*argv, str(tmp_path / "masks"), "--json", "--device", "cpu"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["evaluations"]
    assert result["units"]["hd95"] == "mm" and result["slices"] == 21


def test_a_missing_reference_is_one_line(folders, tmp_path, capsys):
    images, masks, stems = folders
    (masks / f"{stems[1]}.png").unlink()
    assert main(["evaluate", "polyp_unet", "--images", str(images), "--reference", str(masks)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"no reference for {stems[1]}.png" in err
