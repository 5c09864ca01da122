"""slicewise_train end to end on the real shared data with tiny networks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import slicewise
from slicewise.io.samples import shared_data_dir
from slicewise.models.checkpoint import read_header
from slicewise_train.cli import main
from slicewise_train.config import TrainConfig
from slicewise_train.evaluate import evaluate
from slicewise_train.export import export
from slicewise_train.loop import fit, rex_factor

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def tiny_config(data: Path, **overrides: object) -> TrainConfig:
    values = {"arch": "unet", "init_kwargs": TINY, "epochs": 2, "lr_grid": (1e-3,), "size": 64, "name": "tiny"}
    return TrainConfig(data=(str(data),), **{**values, **overrides})


def test_rex_schedule_decays_from_one_to_zero_above_linear() -> None:
    assert rex_factor(0, 100) == 1.0 and rex_factor(100, 100) == 0.0
    assert rex_factor(50, 100) == pytest.approx(0.5 / 0.75)  # REX stays above the linear decay
    assert all(rex_factor(s, 100) >= rex_factor(s + 1, 100) for s in range(100))


def test_fit_evaluate_export_round_trip(mini_hc18: Path, tmp_path: Path) -> None:
    config = tiny_config(mini_hc18, lr_grid=(1e-3, 1e-4), grid_epochs=1)
    checkpoint = fit(config, tmp_path / "run")
    header = read_header(checkpoint)
    assert header.spec.input.channels == 1 and header.spec.output.class_names[1].startswith("fetal head")
    assert header.spec.input.size == 64  # the plugin resizes slices to the size the model trained at
    assert header.provenance["data"] == ["hc18"] and "val_dice" in header.provenance["metrics"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [t["learning_rate"] for t in history["lr_grid"]] == [1e-3, 1e-4]
    assert history["learning_rate"] in (1e-3, 1e-4) and len(history["history"]) == 2

    result = evaluate(checkpoint, mini_hc18, "test")
    scores = result.as_dict()
    assert scores["images"] == 6 and 0.0 <= scores["dice"] <= 1.0
    assert scores["hd95"] >= 0.0 and 0.0 <= scores["nsd"] <= 1.0

    exported, evaluations = export(checkpoint, tmp_path / "exported.safetensors", [mini_hc18])
    metrics = read_header(exported).provenance["metrics"]
    assert metrics["test_dice_hc18"] == round(evaluations[0].pooled_dice, 4)
    model = slicewise.load_model(exported, device="cpu")
    assert slicewise.predict(model, np.zeros((50, 60), np.uint8)).labels.shape == (50, 60)


def test_early_stopping_stops_when_validation_dice_stalls(mini_hc18: Path, tmp_path: Path) -> None:
    # a learning rate of zero never improves on the first epoch
    fit(tiny_config(mini_hc18, epochs=10, patience=2, lr_grid=(0.0,)), tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["stopped_early"] and history["epochs_run"] == 3 and history["best_epoch"] == 1


def _fit_command(data: Path, out: Path, epochs: int) -> list[str]:
    config = tiny_config(data, epochs=epochs, augmentation="standard")
    config_file = out.parent / f"{out.name}.json"
    config_file.write_text(config.to_json())
    return [sys.executable, "-m", "slicewise_train.cli", "fit", "--config", str(config_file), "--out", str(out)]


def test_resume_after_kill_reaches_the_same_weights(mini_hc18: Path, tmp_path: Path) -> None:
    """kill -9 in the middle of an epoch, then ``fit --resume``: the weights equal an uninterrupted run's."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight"
    subprocess.run(_fit_command(mini_hc18, straight, 4), check=True, env=environment, capture_output=True)

    interrupted = tmp_path / "interrupted"
    command = _fit_command(mini_hc18, interrupted, 4)
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    while "epoch 2/4" not in seen:  # epoch 2 is written: kill during epoch 3
        line = process.stdout.readline()
        assert line or process.poll() is None, seen
        seen += line
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "history.json").exists()  # it did not finish
    subprocess.run([*command, "--resume"], check=True, env=environment, capture_output=True)

    finished = load_file(straight / "last.safetensors")
    resumed = load_file(interrupted / "last.safetensors")
    assert finished.keys() == resumed.keys()
    for key in finished:
        torch.testing.assert_close(resumed[key], finished[key], rtol=0, atol=0, msg=key)
    history = json.loads((interrupted / "history.json").read_text())
    assert [e["epoch"] for e in history["history"]] == [1, 2, 3, 4]


def test_torchrun_trains_with_distributed_data_parallel_on_gloo(mini_hc18: Path, tmp_path: Path) -> None:
    """Two CPU processes under torchrun: gradients are all-reduced, so both ranks end with equal weights."""
    out = tmp_path / "ddp"
    command = _fit_command(mini_hc18, out, 2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*torchrun, *command[1:]], env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert history["world_size"] == 2 and len(history["history"]) == 2
    assert history["ranks_in_sync"] is True  # every parameter equal on both ranks, checked at the end
    model = slicewise.load_model(out / "model.safetensors", device="cpu")
    assert slicewise.predict(model, np.zeros((40, 50), np.uint8)).labels.shape == (40, 50)


def test_cli_fit_writes_metrics_and_report_and_evaluate_json(mini_hc18: Path, tmp_path: Path, capsys) -> None:
    config_file = tmp_path / "tiny.json"
    config_file.write_text(tiny_config(mini_hc18).to_json())
    assert main(["fit", "--config", str(config_file), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    evaluation = metrics["runs"][0]["evaluations"][0]
    assert evaluation["dataset"] == "hc18" and set(evaluation["per_image"]) and "hd95" in evaluation
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| tiny |" in report and "plots/dice_bars.png" in report
    assert (tmp_path / "run" / "plots" / "worst_tiny__hc18.png").stat().st_size > 10_000
    capsys.readouterr()

    kvasir = shared_data_dir() / "kvasir_seg"
    assert main(["evaluate", "--model", "polyp_unet", "--data", str(kvasir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "kvasir_seg" and result["images"] == 45 and result["dice"] > 0.75
    assert {"dice", "iou", "hd95", "nsd"} <= set(result) and {"dice", "iou", "hd95", "nsd"} <= set(
        result["per_image_mean"]
    )


def test_k_fold_trains_every_fold_and_keeps_the_best(mini_hc18: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.json"
    config_file.write_text(tiny_config(mini_hc18, epochs=1).to_json())
    assert main(["fit", "--config", str(config_file), "--folds", "2", "--out", str(tmp_path / "cv")]) == 0
    vals = [json.loads((tmp_path / "cv" / f"fold_{k}" / "history.json").read_text())["val_dice"] for k in (0, 1)]
    best = read_header(tmp_path / "cv" / "model.safetensors").provenance["metrics"]["val_dice"]
    assert best == round(max(vals), 4)
    runs = json.loads((tmp_path / "cv" / "metrics.json").read_text())["runs"]
    assert [r["model"] for r in runs] == ["tiny fold 0", "tiny fold 1"]


def test_clear_errors_for_bad_config_missing_data_and_mismatched_classes(tmp_path: Path, capsys) -> None:
    assert main(["fit", "--out", str(tmp_path)]) == 2
    assert "Give at least one dataset" in capsys.readouterr().err
    assert main(["evaluate", "--model", "polyp_unet", "--data", str(tmp_path)]) == 2
    assert "has no split.json" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": ["x"], "learnin_rate": 1}')
    assert main(["fit", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "Unknown config key learnin_rate" in capsys.readouterr().err
    bad.write_text('{"data": ["x"], "loss": "focal"}')
    assert main(["fit", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "choose one of: ce, dice_ce" in capsys.readouterr().err
    assert main(["fit", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_dataset_with_more_classes_than_the_model_is_one_sentence(mini_hc18: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "hc18_three_classes"
    shutil.copytree(mini_hc18, data)
    stem = json.loads((data / "split.json").read_text())["test"][0]
    mask = np.asarray(Image.open(data / "masks" / f"{stem}.png")).copy()
    mask[:5, :5] = 2
    Image.fromarray(mask).save(data / "masks" / f"{stem}.png")
    assert main(["evaluate", "--model", "fetal_head_unet", "--data", str(data)]) == 2
    assert "has 3 classes but fetal_head_unet predicts 2" in capsys.readouterr().err
