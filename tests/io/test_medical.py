"""Medical volumes read and written with their geometry, on the real shared NIfTI, NRRD and DICOM files."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
import tifffile

from slicewise._reader import METADATA_KEY, napari_get_reader
from slicewise.errors import ImageError
from slicewise.io.medical import Volume, read_volume, write_labels

Z_ORDER = [2, 0, 3, 1]  # the order the series' files are written in: not their anatomical order


@pytest.fixture
def ct_series(data_dir: Path, tmp_path: Path) -> Path:
    """A 4-slice CT series made from CT_small.dcm: slices 5 mm apart, files named out of order.

    Slice k is shifted 5·k mm along the normal, numbered 4 - k and marked by pixel (0, 0) = 100 + k,
    so sorting by ImagePositionPatient (not by name or InstanceNumber) gives marks 100..103.
    """
    source = pydicom.dcmread(data_dir / "dicom" / "CT_small.dcm")
    folder = tmp_path / "series"
    folder.mkdir()
    for k in Z_ORDER:
        ds = copy.deepcopy(source)
        pixels = ds.pixel_array.copy()
        pixels[0, 0] = 100 + k
        ds.PixelData = pixels.tobytes()
        x, y, z = (float(v) for v in source.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * k]
        ds.SOPInstanceUID = hd.UID()
        ds.InstanceNumber = 4 - k
        ds.save_as(folder / f"IM{9 - k}")
    return folder


def test_nifti_labels_round_trip_keeps_array_and_affine(data_dir, tmp_path):
    source = data_dir / "mni152_icbm2009a_3d" / "labels.nii.gz"
    labels = read_volume(source)
    assert labels.is_labels and labels.kind == "nifti" and labels.array.dtype == np.uint8
    assert labels.array.shape == (189, 233, 197)  # NIfTI (x, y, z) reversed to napari's (z, y, x)
    assert labels.spacing == (1.0, 1.0, 1.0) and labels.translate == (-72.0, -134.0, -98.0)

    written = write_labels(tmp_path / "labels.nii.gz", labels.array, like=labels)
    again = read_volume(written)
    np.testing.assert_array_equal(again.array, labels.array)
    np.testing.assert_array_equal(again.affine, nib.load(source).affine)
    assert again.array.dtype == np.uint8 and again.is_labels
    np.testing.assert_array_equal(np.asarray(nib.load(written).dataobj), np.asarray(nib.load(source).dataobj))


def test_nifti_image_opens_as_an_image_layer_with_scale_and_translate(data_dir):
    path = data_dir / "mni152_icbm2009a_3d" / "image.nii.gz"
    ((data, kwargs, kind),) = napari_get_reader(str(path))(str(path))
    assert kind == "image" and data.dtype == np.uint8 and data.shape == (189, 233, 197)
    assert kwargs["name"] == "image" and kwargs["scale"] == (1.0, 1.0, 1.0)
    assert kwargs["translate"] == (-72.0, -134.0, -98.0)
    assert kwargs["metadata"][METADATA_KEY]["source"] == str(path)


def test_nrrd_spacing_survives_reading_and_writing(data_dir, tmp_path):
    root = data_dir / "pyradiomics_3d"
    ((image, image_kwargs, image_kind),) = napari_get_reader(str(root / "brain1_image.nrrd"))(
        str(root / "brain1_image.nrrd")
    )
    ((labels, kwargs, kind),) = napari_get_reader(str(root / "brain1_label.nrrd"))(str(root / "brain1_label.nrrd"))
    assert (image_kind, image.dtype, image.shape) == ("image", np.int16, (25, 256, 256))
    assert (kind, labels.dtype) == ("labels", np.int32)
    for scale in (image_kwargs["scale"], kwargs["scale"]):
        assert scale == pytest.approx((6.5, 0.78125, 0.78125))
    assert image_kwargs["translate"] == pytest.approx(kwargs["translate"])

    like = Volume.from_metadata(labels, kwargs["metadata"][METADATA_KEY])
    written = nib.load(write_labels(tmp_path / "brain1_label.nii.gz", labels, like=like))
    assert written.header.get_zooms() == pytest.approx((0.78125, 0.78125, 6.5))
    assert nib.aff2axcodes(written.affine) == ("L", "A", "S")  # NRRD's LPS directions, in RAS terms
    stored, header = nrrd.read(str(root / "brain1_label.nrrd"))  # pynrrd's own (x, y, z) order
    np.testing.assert_array_equal(np.asarray(written.dataobj), stored)
    corner = np.array([255, 10, 24])  # a voxel index: its RAS position must be NRRD's LPS one, x and y negated
    lps = header["space origin"] + header["space directions"].T @ corner
    np.testing.assert_allclose(written.affine[:3, :3] @ corner + written.affine[:3, 3], lps * [-1, -1, 1])


def test_tiff_labels_carry_the_spacing(data_dir, tmp_path):
    labels = read_volume(data_dir / "pyradiomics_3d" / "brain1_label.nrrd")
    path = write_labels(tmp_path / "brain1_label.tif", labels.array, like=labels)
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(tif.asarray(), labels.array)
        assert tif.imagej_metadata["spacing"] == pytest.approx(6.5)
        x_resolution = tif.pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(1 / 0.78125)

    many = labels.array.astype(np.int32) * 70_000  # beyond ImageJ's 16 bits: tifffile's own metadata instead
    with tifffile.TiffFile(write_labels(tmp_path / "many.tif", many, like=labels)) as tif:
        np.testing.assert_array_equal(tif.asarray(), many)
        assert tif.shaped_metadata[0]["spacing"] == pytest.approx(6.5)


def test_dicom_file_reads_in_hounsfield_units_and_a_seg_references_it(data_dir, tmp_path):
    path = data_dir / "dicom" / "CT_small.dcm"
    ct = read_volume(path)
    dataset = pydicom.dcmread(path)
    assert (ct.kind, ct.modality, ct.is_labels, ct.array.dtype) == ("dicom", "CT", False, np.int16)
    np.testing.assert_array_equal(ct.array, dataset.pixel_array.astype(np.int32) - 1024)  # RescaleIntercept -1024
    assert ct.spacing == pytest.approx((0.661468, 0.661468))

    mask = np.zeros(ct.array.shape, np.uint8)
    mask[40:80, 30:90] = 1
    seg_path = write_labels(tmp_path / "mask.dcm", mask, like=ct)
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.FrameOfReferenceUID == dataset.FrameOfReferenceUID
    (referenced_series,) = seg.ReferencedSeriesSequence
    assert referenced_series.SeriesInstanceUID == dataset.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in referenced_series.ReferencedInstanceSequence] == [
        dataset.SOPInstanceUID
    ]
    np.testing.assert_array_equal(hd.seg.segread(seg_path).get_volume(combine_segments=True).array[0], mask)
    back = read_volume(seg_path)
    assert back.kind == "dicom-seg" and back.is_labels
    np.testing.assert_array_equal(back.array, mask)
    assert back.spacing == pytest.approx(ct.spacing) and back.translate == pytest.approx(ct.translate)


def test_dicom_seg_file_opens_as_labels(data_dir):
    path = data_dir / "dicom" / "liver_1frame.dcm"
    ((data, kwargs, kind),) = napari_get_reader(str(path))(str(path))
    assert kind == "labels" and data.shape == (512, 512) and set(np.unique(data)) == {0, 1}
    assert kwargs["scale"] == pytest.approx((0.810547, 0.810547))
    assert kwargs["metadata"][METADATA_KEY]["kind"] == "dicom-seg"


def test_dicom_folder_is_one_series_sorted_by_position(ct_series, tmp_path):
    volume = read_volume(ct_series)
    assert volume.array.shape == (4, 128, 128) and volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array[:, 0, 0], np.arange(100, 104) - 1024)
    assert volume.spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert [p.name for p in volume.dicom_files] == ["IM9", "IM8", "IM7", "IM6"]

    mask = np.zeros(volume.array.shape, np.uint8)
    mask[1, 40:60, 40:60] = 1
    mask[2, 50:70, 50:70] = 2
    seg_path = write_labels(tmp_path / "series_seg.dcm", mask, like=volume)
    instances = pydicom.dcmread(seg_path).ReferencedSeriesSequence[0].ReferencedInstanceSequence
    source_uids = {pydicom.dcmread(p).SOPInstanceUID for p in volume.dicom_files}
    assert {i.ReferencedSOPInstanceUID for i in instances} == source_uids
    back = read_volume(seg_path)  # a SEG stores the painted slices only: slices 1..2, placed by translate
    np.testing.assert_array_equal(back.array, mask[1:3])
    assert back.translate == pytest.approx((volume.translate[0] + 5.0, *volume.translate[1:]))


@pytest.mark.parametrize(
    ("name", "dtype", "values", "is_labels"),
    [
        ("case_seg.nii.gz", np.uint8, 3, True),
        ("labelsTr/case.nii.gz", np.int16, 5, True),
        ("case.nii.gz", np.uint8, 3, False),
        ("case_mask.nii.gz", np.float32, 2, False),
        ("ct_mask.nii.gz", np.int16, 1000, False),
    ],
)
def test_labels_are_integers_with_few_values_and_a_name_hint(tmp_path, name, dtype, values, is_labels):
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    data = (np.arange(10 * 12 * 14) % values).reshape(10, 12, 14).astype(dtype)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    assert read_volume(path).is_labels is is_labels


def test_nifti_scaling_is_applied_like_dicom_rescale(tmp_path):
    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    for slope, intercept, dtype in ((2, -10, np.int16), (0.5, 0, np.float32)):
        image = nib.Nifti1Image(stored, np.eye(4))
        image.header.set_slope_inter(slope, intercept)
        nib.save(image, tmp_path / "scaled.nii")
        volume = read_volume(tmp_path / "scaled.nii")
        assert volume.array.dtype == dtype
        np.testing.assert_allclose(volume.array, stored.T * slope + intercept)


def test_bad_inputs_raise_one_sentence(data_dir, ct_series, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    png = sorted((data_dir / "kvasir_seg" / "images").glob("*.png"))[0]
    bad = {
        tmp_path / "missing.nii.gz": "does not exist",
        tmp_path / "empty": "no DICOM image files",
        tmp_path / "broken.nii.gz": "Cannot read broken.nii.gz",
        png: "is not a NIfTI",
    }
    for path, message in bad.items():
        with pytest.raises(ImageError, match=message):
            read_volume(path)
    other = pydicom.dcmread(data_dir / "dicom" / "MR_small.dcm")
    other.save_as(ct_series / "other_series.dcm")
    with pytest.raises(ImageError, match="holds 2 DICOM series"):
        read_volume(ct_series)


def test_writers_refuse_what_they_cannot_place(data_dir, tmp_path):
    nifti = read_volume(data_dir / "mni152_icbm2009a_3d" / "labels.nii.gz")
    with pytest.raises(ImageError, match="must reference a DICOM image series"):
        write_labels(tmp_path / "seg.dcm", nifti.array, like=nifti)
    with pytest.raises(ImageError, match="have shape"):
        write_labels(tmp_path / "labels.nii.gz", nifti.array[0], like=nifti)
    ct = read_volume(data_dir / "dicom" / "CT_small.dcm")
    with pytest.raises(ImageError, match="at least one positive label"):
        write_labels(tmp_path / "seg.dcm", np.zeros(ct.array.shape, np.uint8), like=ct)


def test_the_napari_reader_declines_what_it_does_not_read(data_dir, tmp_path):
    assert napari_get_reader(str(data_dir / "kvasir_seg" / "images")) is None
    assert napari_get_reader(str(tmp_path)) is None
    assert napari_get_reader([str(data_dir / "dicom" / "CT_small.dcm")] * 2) is None
    assert napari_get_reader(str(data_dir / "dicom")) is not None  # a folder of DICOM files: a series or an error
