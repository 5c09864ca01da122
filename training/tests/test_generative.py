"""GenSeg-style generative augmentation on real Kvasir-SEG pairs with tiny networks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import slicewise
from slicewise.errors import SlicewiseError
from slicewise.models.registry import make_spec
from slicewise_train.cli import main
from slicewise_train.config import GenerativeConfig, TrainConfig
from slicewise_train.data import load_split
from slicewise_train.export import export
from slicewise_train.generative import GENERATOR_FILE, GRID_FILE, Synthesizer, mask_augmentation
from slicewise_train.loop import SliceDataset, fit

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
FAST = {"generator": "tiny", "pretrain_epochs": 2}


def tiny_config(data: Path, **overrides: object) -> TrainConfig:
    values = {
        "arch": "unet",
        "init_kwargs": TINY,
        "epochs": 1,
        "lr_grid": (1e-3,),
        "size": 64,
        "name": "tiny",
        "augmentation": "generative",
        "generative": FAST,
    }
    return TrainConfig(data=(str(data),), **{**values, **overrides})


def real_pairs(data: Path, count: int = 8) -> SliceDataset:
    spec = make_spec("unet", class_names=("background", "polyp"), in_channels=3, size=64, **TINY)
    return SliceDataset(load_split(data, "train")[:count], spec, 64)


def test_mask_augmentation_keeps_labels_and_shape() -> None:
    mask = torch.zeros(1, 64, 64)
    mask[:, 20:40, 16:48] = 1
    transform = mask_augmentation(64)
    transform.set_random_state(seed=3)
    outputs = [np.asarray(transform(mask)) for _ in range(6)]
    assert all(o.shape == (1, 64, 64) and set(np.unique(o)) <= {0.0, 1.0} for o in outputs)
    assert any(not np.array_equal(o, mask.numpy()) for o in outputs)  # it moves the mask


def test_generator_trains_on_real_pairs(mini_data: Path) -> None:
    torch.manual_seed(0)
    pairs = real_pairs(mini_data / "kvasir_seg")
    images = torch.stack([pairs[i][0] for i in range(len(pairs))])
    labels = torch.stack([pairs[i][1] for i in range(len(pairs))])
    synthesizer = Synthesizer(GenerativeConfig(generator="tiny"), 2, 3, 64, torch.device("cpu"), bounded=True)
    losses = [synthesizer.gan_step(labels, images) for _ in range(4)]
    assert all(np.isfinite(v) for step in losses for v in step.values())
    fake = synthesizer.synthesize(synthesizer.augment_masks(labels))
    assert fake.shape == (8, 3, 64, 64) and fake.shape[-2:] == labels.shape[-2:]
    assert torch.isfinite(fake).all() and fake.min() >= 0.0 and fake.max() <= 1.0  # percentile frame


def _val_loss(synthesizer: Synthesizer, net: torch.nn.Module, real: tuple, val: tuple, eta: float) -> float:
    """L_val(w − η ∇_w [L_real + λ L_syn]) by plain autograd, for the finite-difference check."""
    loss_fn = _cross_entropy
    masks = synthesizer._last_masks
    params = list(net.parameters())
    synthetic = synthesizer.generator(_one_hot(masks).double())
    train_loss = loss_fn(net(real[0]), real[1]) + loss_fn(net(synthetic), masks)
    grads = torch.autograd.grad(train_loss, params)
    updated = {n: p - eta * g for (n, p), g in zip(net.named_parameters(), grads, strict=True)}
    return float(loss_fn(torch.func.functional_call(net, updated, (val[0],)), val[1]).detach())


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, labels[:, 0])


def _one_hot(masks: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(masks[:, 0], 2).permute(0, 3, 1, 2).float()


def test_hypergradient_matches_finite_differences(mini_data: Path) -> None:
    torch.manual_seed(0)
    pairs = real_pairs(mini_data / "kvasir_seg", 6)
    images = torch.stack([pairs[i][0] for i in range(6)]).double()
    labels = torch.stack([pairs[i][1] for i in range(6)])
    real, val = (images[:3], labels[:3]), (images[3:], labels[3:])
    synthesizer = Synthesizer(GenerativeConfig(generator="tiny"), 2, 3, 64, torch.device("cpu"), bounded=True)
    synthesizer.generator.double()
    for module in synthesizer.generator.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # a deterministic generator, so the loss is a function of its weights
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 2, 1)).double()
    setup = SimpleNamespace(forward=lambda n, x, size: n(x), val_set=[(val[0][i], val[1][i]) for i in range(3)])
    eta = 0.5
    # the loop's order: real + synthetic loss, backward, then the generator's step
    loss = _cross_entropy(net(real[0]), real[1])
    loss = loss + synthesizer.segmenter_loss(setup, net, real[1], _cross_entropy, torch.autocast("cpu", enabled=False))
    loss.backward()
    hyper, value = synthesizer.hypergradient(setup, net, _cross_entropy, eta)
    assert value == pytest.approx(_val_loss(synthesizer, net, real, val, eta), rel=1e-9)
    direction = [torch.randn_like(p) for p in synthesizer.generator.parameters()]
    analytic = sum(float((g * d).sum()) for g, d in zip(hyper, direction, strict=True) if g is not None)
    epsilon = 1e-7
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for p, d in zip(synthesizer.generator.parameters(), direction, strict=True):
                p.add_(sign * epsilon * d)
        values.append(_val_loss(synthesizer, net, real, val, eta))
        with torch.no_grad():
            for p, d in zip(synthesizer.generator.parameters(), direction, strict=True):
                p.sub_(sign * epsilon * d)
    numeric = (values[0] - values[1]) / (2 * epsilon)
    assert analytic != 0.0 and analytic == pytest.approx(numeric, rel=1e-4)


@pytest.fixture(scope="module")
def separate_run(mini_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generative") / "separate"
    fit(tiny_config(mini_data / "kvasir_seg"), out)
    return out


def test_generative_fit_exports_a_model_the_plugin_loads(separate_run: Path, mini_data: Path, tmp_path: Path) -> None:
    history = json.loads((separate_run / "history.json").read_text())
    generative = history["generative"]
    assert len(generative["pretrain"]) == 2 and not generative["reused_pretrained"]
    assert all(np.isfinite(history["history"][0][k]) for k in ("loss", "val_dice"))
    exported, _ = export(
        separate_run / "model.safetensors", tmp_path / "exported.safetensors", [mini_data / "kvasir_seg"]
    )
    model = slicewise.load_model(exported, device="cpu")
    image = np.asarray(Image.open(next((mini_data / "kvasir_seg" / "images").iterdir())))
    assert slicewise.predict(model, image).labels.shape == image.shape[:2]
    assert model.spec.input.size == 64


def test_synthetic_grid_is_written(separate_run: Path) -> None:
    grid = np.asarray(Image.open(separate_run / GRID_FILE))
    # 8 rows (training pairs) × 4 tiles (image, mask, augmented mask, synthetic), 64 px + 2 px borders
    assert grid.shape == (8 * 68, 4 * 68, 3) and grid.std() > 0


def test_end_to_end_updates_the_generator_and_reuses_the_pretrained_one(
    separate_run: Path, mini_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "end_to_end"
    out.mkdir()
    shutil.copy(separate_run / GENERATOR_FILE, out / GENERATOR_FILE)
    checkpoint = fit(tiny_config(mini_data / "kvasir_seg", generative={**FAST, "end_to_end": True}), out)
    generative = json.loads((out / "history.json").read_text())["generative"]
    assert generative["reused_pretrained"]  # same data and generator settings: not trained again
    assert generative["end_to_end_steps"] == 3  # 24 training pairs, batch 8, one epoch
    assert all(np.isfinite(v) for v in generative["end_to_end_mean"].values())
    assert (out / "synthetic_pairs_final.png").exists() and checkpoint.exists()


def test_cli_fit_with_generative_augmentation_reports(mini_data: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "generative.json"
    config_file.write_text(tiny_config(mini_data / "kvasir_seg", generative={**FAST, "weight": 0.5}).to_json())
    assert main(["fit", "--config", str(config_file), "--out", str(tmp_path / "run")]) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "generative" in report and (tmp_path / "run" / GRID_FILE).exists()


def test_bad_generative_settings_are_one_sentence(tmp_path: Path) -> None:
    cases = {
        "λ": {"weight": -0.5},
        "generator": {"generator": "huge"},
        "setting": {"generatr": "small"},
        "epochs": {"pretrain_epochs": 0},
    }
    for expected, settings in cases.items():
        with pytest.raises(SlicewiseError) as error:
            TrainConfig.from_dict({"data": ["x"], "augmentation": "generative", "generative": settings})
        message = str(error.value)
        assert expected in message and "\n" not in message and message.endswith(".")
    config = TrainConfig(data=("x",), augmentation="generative", generative={"weight": 0.5, "end_to_end": True})
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config  # round-trips through JSON


def test_too_few_pairs_is_one_sentence(mini_data: Path, tmp_path: Path) -> None:
    source = mini_data / "kvasir_seg"
    few = tmp_path / "kvasir_seg"
    shutil.copytree(source, few)
    splits = json.loads((source / "split.json").read_text())
    (few / "split.json").write_text(json.dumps({"train": splits["train"][:5], "val": splits["val"][:2], "test": []}))
    with pytest.raises(SlicewiseError, match="needs at least 8; the training split has 5"):
        fit(tiny_config(few), tmp_path / "run")
