"""``slicewise-train protocol``: models × datasets, the cross-dataset matrix, paired tests and one report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slicewise_train.cli import main
from slicewise_train.protocol import load_protocol

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_UNET = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def _protocol(mini_data: Path, path: Path) -> Path:
    protocol = {
        "name": "tiny protocol",
        "datasets": [str(mini_data / d) for d in ("kvasir_seg", "cvc_clinicdb", "hc18")],
        "defaults": {"size": 64, "epochs": 2, "lr_grid": [0.001], "seed": 7},
        "models": [
            {"name": "tiny_unet", "arch": "unet", "init_kwargs": TINY_UNET},
            {
                "name": "tiny_segformer",
                "arch": "segformer",
                "init_kwargs": {"hidden_sizes": [8, 16, 40, 64], "decoder_hidden_size": 32},
                "datasets": ["kvasir_seg", "cvc_clinicdb"],
            },
        ],
    }
    path.write_text(json.dumps(protocol))
    return path


def test_protocol_trains_evaluates_across_datasets_and_reports(mini_data: Path, tmp_path: Path, capsys) -> None:
    protocol_file = _protocol(mini_data, tmp_path / "protocol.json")
    assert main(["protocol", str(protocol_file), "--out", str(tmp_path / "study")]) == 0
    metrics = json.loads((tmp_path / "study" / "metrics.json").read_text())
    assert [(r["model"], r["trained_on"]) for r in metrics["runs"]] == [
        ("tiny_unet", "kvasir_seg"),
        ("tiny_unet", "cvc_clinicdb"),
        ("tiny_unet", "hc18"),
        ("tiny_segformer", "kvasir_seg"),
        ("tiny_segformer", "cvc_clinicdb"),
    ]
    assert {r["kind"] for r in metrics["runs"]} == {"SMA", "GP-VM"}
    # polyp runs are tested on both polyp sets; hc18 (another task) only on itself
    matrix = metrics["cross_dataset"]["tiny_unet"]
    assert set(matrix) == {"kvasir_seg", "cvc_clinicdb"} and set(matrix["kvasir_seg"]) == {"kvasir_seg", "cvc_clinicdb"}
    hc18_run = metrics["runs"][2]
    assert [e["dataset"] for e in hc18_run["evaluations"]] == ["hc18"]
    pairs = {(c["a"], c["b"], c["trained_on"], c["tested_on"]) for c in metrics["comparisons"]}
    assert ("tiny_unet", "tiny_segformer", "kvasir_seg", "cvc_clinicdb") in pairs
    assert all(0.0 <= c["p_value"] <= 1.0 and c["images"] == 6 for c in metrics["comparisons"])
    report = (tmp_path / "study" / "report.md").read_text()
    for heading in ("## Test results", "## Cross-dataset Dice", "## Paired comparisons", "Wilcoxon"):
        assert heading in report
    plots = sorted(p.name for p in (tmp_path / "study" / "plots").iterdir())
    assert "dice_bars.png" in plots and "dice_per_image.png" in plots and len(plots) == 2 + 5

    # a second call reuses every finished run and its evaluations
    cache = tmp_path / "study" / "runs" / "tiny_unet__kvasir_seg" / "evaluations.json"
    cached_at = cache.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["protocol", str(protocol_file), "--out", str(tmp_path / "study")]) == 0
    assert "training" not in capsys.readouterr().out
    assert cache.stat().st_mtime_ns == cached_at
    again = json.loads((tmp_path / "study" / "metrics.json").read_text())
    assert again["runs"][0]["evaluations"] == metrics["runs"][0]["evaluations"]


def test_protocol_errors_are_one_sentence(mini_data: Path, tmp_path: Path, capsys) -> None:
    cases = {
        '{"datasets": [], "models": []}': "needs a non-empty datasets and models list",
        json.dumps(
            {"datasets": [str(tmp_path / "nowhere")], "models": [{"arch": "unet"}]}
        ): "is missing or has no split.json",
        json.dumps({"datasets": [str(mini_data / "hc18")], "models": [{"name": "x"}]}): "needs an arch",
        json.dumps(
            {"datasets": [str(mini_data / "hc18")], "models": [{"arch": "unet", "datasets": ["isic"]}]}
        ): "not in the",
    }
    for text, expected in cases.items():
        path = tmp_path / "p.json"
        path.write_text(text)
        with pytest.raises(Exception, match=expected):
            load_protocol(path)
        assert main(["protocol", str(path), "--out", str(tmp_path / "o")]) == 2
        assert expected in capsys.readouterr().err
