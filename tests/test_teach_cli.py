"""`slicewise teach` on a folder of real images, then `predict` and `inspect` with the taught file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from slicewise.cli import main
from slicewise.io.samples import split_stems

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def folders(data_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    root = data_dir / "kvasir_seg"
    for stem in split_stems(root, "train")[:3]:
        shutil.copy(root / "images" / f"{stem}.png", images)
        shutil.copy(root / "masks" / f"{stem}.png", masks)
    shutil.copy(root / "images" / f"{split_stems(root, 'test')[0]}.png", images)  # unlabelled: not taught from
    return images, masks


def test_teach_then_predict_and_inspect(folders, tmp_path: Path, capsys):
    images, masks = folders
    model = tmp_path / "polyp.safetensors"
    code = main(["teach", str(images), str(masks), "--out", str(model), "--encoder", "efficientnet_lite0",
                 "--classes", "background,polyp"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and model.is_file()
    assert "from 3 complete slices" in out and "cross-validated Dice" in out
    assert main(["inspect", str(model)]) == 0
    inspected = capsys.readouterr().out
    assert "taught" in inspected and all(path.name in inspected for path in masks.iterdir())  # which images
    assert main(["predict", str(images), "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--encoder", "resnet9000"], "Unknown pretrained encoder"),
        (["--classes", "background"], "only 1 classes were named"),
    ],
)
def test_teach_mistakes_are_one_line(folders, tmp_path: Path, capsys, args: list[str], message: str):
    images, masks = folders
    code = main(["teach", str(images), str(masks), "--out", str(tmp_path / "m.safetensors"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_masks_named_after_no_image_are_one_line(folders, tmp_path: Path, capsys):
    images, _ = folders
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(next(images.glob("*.png")), other / "unrelated.png")
    assert main(["teach", str(images), str(other), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "has a label map of the same name" in capsys.readouterr().err


def test_teach_from_a_volumes_painted_slices_then_predict_it_in_its_own_geometry(
    data_dir: Path, tmp_path: Path, capsys
):
    from slicewise.io.medical import read_volume, write_labels

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    source = data_dir / "pyradiomics_3d" / "brain1_image.nrrd"
    shutil.copy(source, images / "brain1.nrrd")
    volume, reference = read_volume(source), read_volume(data_dir / "pyradiomics_3d" / "brain1_label.nrrd").array
    painted = np.zeros_like(reference)
    painted[[12, 16]] = reference[[12, 16]]  # two of the tumour's seven slices, as a person paints them
    write_labels(masks / "brain1.nii.gz", painted, like=volume)  # another format, the same name

    model = tmp_path / "tumour.safetensors"
    assert main(["teach", str(images), str(masks), "--out", str(model), "--encoder", "efficientnet_lite0"]) == 0
    assert "from 2 complete slices" in capsys.readouterr().out
    assert main(["inspect", str(model)]) == 0
    assert "brain1.nrrd slice 12" in capsys.readouterr().out
    assert main(["predict", str(images), "--model", str(model), "--out", str(tmp_path / "out")]) == 0
    predicted = read_volume(tmp_path / "out" / "brain1.nii.gz")  # beside the volume in any viewer
    assert predicted.array.shape == volume.array.shape
    np.testing.assert_allclose(predicted.affine, volume.affine, atol=1e-4)
    assert predicted.array[12].any()  # the taught slice's tumour is found again
    assert (tmp_path / "out" / "brain1.nii.gz").stat().st_mode & 0o777 == 0o644  # others may read results


def test_black_and_white_masks_teach_as_their_label_maps(folders, tmp_path: Path, capsys):
    """Masks saved as 0/255 pictures (grey or RGB, as many data sets and drawing tools save them)
    teach the same model as 0/1 label maps, instead of naming a class 255."""
    from PIL import Image

    images, masks = folders
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for index, mask in enumerate(sorted(masks.iterdir())):
        white = np.asarray(Image.open(mask)).astype(np.uint8) * 255
        Image.fromarray(np.dstack([white] * 3) if index == 0 else white).save(pictures / mask.name)
    said = []
    for folder in (masks, pictures):
        out = tmp_path / f"{folder.name}.safetensors"
        assert main(["teach", str(images), str(folder), "--out", str(out), "--encoder", "efficientnet_lite0"]) == 0
        said.append(capsys.readouterr().out.splitlines()[0].split(":", 1)[1])  # the Dice, not the seconds
    assert said[0] == said[1]


def test_masks_named_as_data_sets_name_them_are_found(folders, tmp_path: Path, capsys):
    """``<image>_mask.png`` (BUSI, many Kaggle sets) in a folder of their own or beside their images,
    and ``<image>_segmentation.png`` (ISIC) are each image's mask; the masks are not taught as images."""
    images, masks = folders
    beside = tmp_path / "beside"
    shutil.copytree(images, beside)
    suffixed = tmp_path / "suffixed"
    suffixed.mkdir()
    for mask in masks.iterdir():
        shutil.copy(mask, beside / f"{mask.stem}_mask.png")
        shutil.copy(mask, suffixed / f"{mask.stem}_segmentation.png")
    for image_folder, mask_folder in ((images, suffixed), (beside, beside)):
        out = tmp_path / "m.safetensors"
        assert (
            main(["teach", str(image_folder), str(mask_folder), "--out", str(out), "--encoder", "efficientnet_lite0"])
            == 0
        )
        assert "from 3 complete slices" in capsys.readouterr().out
