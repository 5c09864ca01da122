"""Medical files through napari's own reader and writer machinery, in a real viewer (runs under Xvfb)."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from napari.layers import Image, Labels

from slicewise._reader import METADATA_KEY
from slicewise.errors import ImageError


def test_nrrd_opens_with_its_spacing_and_labels_save_as_nifti(make_napari_viewer, data_dir, tmp_path):
    viewer = make_napari_viewer()
    root = data_dir / "pyradiomics_3d"
    (image,) = viewer.open(root / "brain1_image.nrrd", plugin="slicewise")
    (labels,) = viewer.open(root / "brain1_label.nrrd", plugin="slicewise")

    assert isinstance(image, Image) and image.data.dtype == np.int16 and image.data.shape == (25, 256, 256)
    assert isinstance(labels, Labels) and labels.data.dtype == np.int32
    for layer in (image, labels):
        assert tuple(layer.scale) == pytest.approx((6.5, 0.78125, 0.78125))
    np.testing.assert_allclose(labels.translate, image.translate)

    (written,) = labels.save(str(tmp_path / "brain1_label.nii.gz"), plugin="slicewise")
    nifti = nib.load(written)
    assert nifti.header.get_zooms() == pytest.approx((0.78125, 0.78125, 6.5))
    np.testing.assert_allclose(nifti.affine, labels.metadata[METADATA_KEY]["affine"])
    np.testing.assert_array_equal(np.asarray(nifti.dataobj).T, labels.data)


def test_labels_painted_beside_a_dicom_image_save_as_a_seg_referencing_it(make_napari_viewer, data_dir, tmp_path):
    viewer = make_napari_viewer()
    folder = tmp_path / "ct"
    folder.mkdir()
    shutil.copy(data_dir / "dicom" / "CT_small.dcm", folder / "IM0001")  # a one-file series, no suffix
    (image,) = viewer.open(folder, plugin="slicewise")
    assert isinstance(image, Image) and image.data.shape == (128, 128)
    mask = np.zeros(image.data.shape, np.uint8)
    mask[20:50, 60:100] = 1
    painted = viewer.add_labels(mask, scale=image.scale, translate=image.translate)

    (written,) = painted.save(str(tmp_path / "mask.dcm"), plugin="slicewise")
    seg = pydicom.dcmread(written)
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert referenced == pydicom.dcmread(folder / "IM0001").SOPInstanceUID

    (reopened,) = viewer.open(written, plugin="slicewise")
    assert isinstance(reopened, Labels)
    np.testing.assert_array_equal(reopened.data, mask)
    np.testing.assert_allclose(reopened.translate, image.translate)


def test_a_dicom_seg_without_a_dicom_image_is_one_sentence(make_napari_viewer, data_dir, tmp_path):
    viewer = make_napari_viewer()
    (labels,) = viewer.open(data_dir / "mni152_icbm2009a_3d" / "labels.nii.gz", plugin="slicewise")
    with pytest.raises(ImageError, match="No DICOM image of shape .* is open beside these labels"):
        labels.save(str(tmp_path / "labels.dcm"), plugin="slicewise")
