"""slicewise_train end to end on the real shared data with a tiny network."""

from __future__ import annotations

import json

import numpy as np

import slicewise
from slicewise.io.samples import shared_data_dir
from slicewise.models.checkpoint import read_header
from slicewise_train.cli import main
from slicewise_train.config import TrainConfig
from slicewise_train.evaluate import evaluate
from slicewise_train.export import export
from slicewise_train.loop import fit

TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def test_fit_evaluate_export_round_trip(tmp_path):
    hc18 = shared_data_dir() / "hc18"
    config = TrainConfig(data=(str(hc18),), arch="unet", init_kwargs=TINY, epochs=1, name="tiny_hc18")
    checkpoint = fit(config, tmp_path / "run")
    header = read_header(checkpoint)
    assert header.spec.input.channels == 1 and header.spec.output.class_names[1].startswith("fetal head")
    assert header.provenance["data"] == ["hc18"] and "val_dice" in header.provenance["metrics"]
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 1

    result = evaluate(checkpoint, hc18, "test")
    assert len(result.per_image) == 45 and 0.0 <= result.pooled_dice <= 1.0

    exported, evaluations = export(checkpoint, tmp_path / "exported.safetensors", [hc18])
    metrics = read_header(exported).provenance["metrics"]
    assert metrics["test_dice_hc18"] == round(evaluations[0].pooled_dice, 4)
    model = slicewise.load_model(exported, device="cpu")
    assert slicewise.predict(model, np.zeros((50, 60), np.uint8)).labels.shape == (50, 60)


def test_cli_evaluate_json_and_clear_errors(tmp_path, capsys):
    kvasir = shared_data_dir() / "kvasir_seg"
    assert main(["evaluate", "--model", "polyp_unet", "--data", str(kvasir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dataset"] == "kvasir_seg" and result["images"] == 45 and result["dice"] > 0.75
    assert main(["fit", "--out", str(tmp_path)]) == 2
    assert "Give at least one dataset" in capsys.readouterr().err
    assert main(["evaluate", "--model", "polyp_unet", "--data", str(tmp_path)]) == 2
    assert "has no split.json" in capsys.readouterr().err
