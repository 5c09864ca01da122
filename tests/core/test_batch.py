"""Batched prediction of many slices: the same masks as slice by slice, written once each."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import slicewise
from slicewise.cli import main
from slicewise.core.batch import predict_files, predict_many
from slicewise.core.types import PredictOptions, SliceRef
from slicewise.errors import SlicewiseError
from slicewise.io.images import read_image, write_tiff


@pytest.fixture(scope="module")
def fp32_model():
    return slicewise.load_model("polyp_unet", device="cpu", precision="fp32")


def test_batches_give_the_masks_of_single_slices(fp32_model, kvasir_test):
    default_model = fp32_model
    slices = [(stem, image) for stem, image, _ in kvasir_test]
    results = dict(predict_many(default_model, slices, batch_size=3, options=PredictOptions(uncertainty="entropy")))
    assert sorted(results) == sorted(stem for stem, _ in slices)
    for stem, image in slices:
        alone = slicewise.predict(default_model, image, uncertainty="entropy")
        np.testing.assert_array_equal(results[stem].labels, alone.labels)
        np.testing.assert_allclose(results[stem].probabilities, alone.probabilities, atol=1e-5)
        np.testing.assert_allclose(results[stem].uncertainty, alone.uncertainty, atol=1e-5)


def test_tiled_and_sampled_slices_run_alone_in_the_same_stream(default_model, kvasir_test):
    image = kvasir_test[0][1]
    options = PredictOptions(tile_size=128)
    results = dict(predict_many(default_model, [("big", image), ("small", image[:96, :96])], options=options))
    np.testing.assert_array_equal(results["big"].labels, slicewise.predict(default_model, image, tile_size=128).labels)
    sampled = dict(predict_many(default_model, [("a", image[:64, :64])], options=PredictOptions(uncertainty="tta")))
    assert sampled["a"].uncertainty is not None


def test_a_stack_and_images_are_written_once_with_their_masks(default_model, kvasir_test, tmp_path):
    images = [image[:128, :128] for _, image, _ in kvasir_test[:5]]
    stack_path = write_tiff(tmp_path / "in" / "stack.tif", np.stack(images))
    image_path = tmp_path / "in" / "one.png"
    from PIL import Image

    Image.fromarray(images[0]).save(image_path)
    results = predict_files(default_model, [stack_path, image_path], tmp_path / "out", batch_size=2)
    assert [r.source for r in results] == [stack_path, image_path]
    written = read_image(tmp_path / "out" / "stack.tif")
    for z in range(len(images)):
        expected = slicewise.predict(default_model, np.stack(images), slice_ref=SliceRef((z,))).labels
        np.testing.assert_array_equal(written[z], expected)
    np.testing.assert_array_equal(
        read_image(tmp_path / "out" / "one.png"), slicewise.predict(default_model, images[0]).labels
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.png", "stack.tif"]


def test_a_failing_file_stops_the_run_with_its_sentence(default_model, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SlicewiseError):
        predict_files(default_model, [bad], tmp_path / "out")


def _copy_images(kvasir_test, folder: Path, count: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for stem, image, _ in kvasir_test[:count]:
        Image.fromarray(image).save(folder / f"{stem}.png")
    return folder


def test_cli_batch_sizes_give_the_same_masks(kvasir_test, tmp_path, capsys):
    folder = _copy_images(kvasir_test, tmp_path / "in", 5)
    for size in (1, 4):
        assert (
            main(
                [
                    "predict",
                    str(folder),
                    "--out",
                    str(tmp_path / f"b{size}"),
                    "--device",
                    "cpu",
                    "--batch-size",
                    str(size),
                    "--precision",
                    "fp32",
                ]
            )
            == 0
        )
    for path in sorted(folder.iterdir()):
        np.testing.assert_array_equal(read_image(tmp_path / "b1" / path.name), read_image(tmp_path / "b4" / path.name))


@pytest.mark.slow
def test_torchrun_with_two_gloo_ranks_writes_each_mask_once(kvasir_test, tmp_path):
    folder = _copy_images(kvasir_test, tmp_path / "in", 6)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "slicewise",
        "predict",
        str(folder),
        "--out",
        str(tmp_path / "two"),
        "--device",
        "cpu",
        "--precision",
        "fp32",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[:4000]  # the ranks' own errors come first; torchrun's summary last
    printed = [line for line in done.stdout.splitlines() if line.endswith(".png")]
    assert sorted(printed) == sorted(str(tmp_path / "two" / p.name) for p in folder.iterdir())  # each once
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "slicewise",
            "predict",
            str(folder),
            "--out",
            str(tmp_path / "one"),
            "--device",
            "cpu",
            "--precision",
            "fp32",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    for path in sorted(folder.iterdir()):
        np.testing.assert_array_equal(
            read_image(tmp_path / "two" / path.name), read_image(tmp_path / "one" / path.name)
        )
