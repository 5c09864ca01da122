"""Explanation quality on the Kvasir-SEG test split: which Grad-CAM layer, and do the maps rank pixels that matter.

Layer table (class activation maps of class 1 on every candidate layer, every test image), for
slicewise's ``gradcam`` (gradient-weighted activations pixel by pixel, HiResCAM) and for captum's
``LayerGradCam`` (activations weighted by spatially averaged gradients, classic Grad-CAM), both
with the same target, ReLU and bilinear upsampling:
- max on polyp: share of images whose Grad-CAM maximum lies inside the reference mask;
- mass in pred / in ref: share of the map's mass inside the predicted / reference region
  (a uniform map would score the area column);
- corr P: Pearson correlation of the map with the predicted class probability (near 1 means
  the layer merely copies the prediction);
- deletion: see below, on the first ``--images`` images.
Method table (the adapter's default Grad-CAM layer, saliency and occlusion, first ``--images``):
mass inside and outside the predicted region, their density ratio (mean inside / mean outside),
the deletion check and seconds per image.

Deletion check: zero the slice's pixels in attribution order, most attributed first, in steps
of 10% up to all of them; the score after each step is the model's mean probability of the
class over the originally predicted region. AUC = area under that curve (0 to 1); the baseline
deletes the pixels in a random order. ratio = AUC / random AUC: below 1, the map puts first
the pixels whose removal hurts the prediction most.

    python benchmarks/explain_quality.py [--model polyp_unet] [--images 20]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Callable

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from predict_latency import machine
from torch import nn

import slicewise
from slicewise.core.explain import EXPLAIN_METHODS, attribution
from slicewise.core.inference import probabilities_from_logits
from slicewise.core.preprocess import prepare
from slicewise.io.samples import shared_data_dir
from slicewise.models.loaded import LoadedModel
from slicewise_train.data import Sample, load_split

TARGET = 1  # polyp
FRACTIONS = np.linspace(0.0, 1.0, 11)


def unet_layers(module: nn.Module) -> list[str]:
    """MONAI UNet: the bottleneck, then each decoder level's up block from the deepest to the last layer."""
    prefix, decoder = "model", []
    while True:
        decoder.append(f"{prefix}.2")
        inner = module.get_submodule(f"{prefix}.1").submodule  # the SkipConnection's contents
        if not isinstance(inner, nn.Sequential):
            return [f"{prefix}.1.submodule", *reversed(decoder)]
        prefix = f"{prefix}.1.submodule"


CANDIDATES: dict[str, Callable[[nn.Module], list[str]]] = {
    "unet": unet_layers,
    "basic_unet": lambda _: ["down_4", "upcat_4", "upcat_3", "upcat_2", "upcat_1", "final_conv"],
}


def with_cam_layer(model: LoadedModel, layer: str) -> LoadedModel:
    """The same network with another Grad-CAM layer (an adapter copy; the class stays untouched)."""
    adapter = copy.copy(model.adapter)
    adapter.cam_layer = lambda spec: layer
    return dataclasses.replace(model, adapter=adapter)


def layer_gradcam(model: LoadedModel, batch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Classic Grad-CAM (captum's ``LayerGradCam``) of the same target, for comparison → (H, W) in [0, 1]."""
    region = labels == TARGET
    weight = (region if region.any() else torch.ones_like(region)).float()

    def target(x: torch.Tensor) -> torch.Tensor:
        return (model.adapter.logits(model.module, x)[:, TARGET] * weight).sum((-2, -1))

    layer = model.module.get_submodule(model.adapter.cam_layer(model.spec))
    cam = LayerGradCam(target, layer).attribute(batch.clone(), relu_attributions=True).detach()
    cam = LayerAttribution.interpolate(cam, tuple(batch.shape[-2:]), interpolate_mode="bilinear")[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min()) if cam.max() > cam.min() else torch.zeros_like(cam)


def padded_prediction(model: LoadedModel, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prepared, padded (1, C, H, W) batch, its (H, W) labels and (K, H, W) probabilities."""
    batch = torch.from_numpy(prepare(image, model.spec.input)).unsqueeze(0).to(model.device)
    with torch.inference_mode():
        logits = model.adapter.logits(model.module, batch).float()
    probabilities = probabilities_from_logits(logits, model.spec.output.activation)[0].clone()
    return batch, probabilities.argmax(0), probabilities


def layer_resolutions(model: LoadedModel, layers: list[str], batch: torch.Tensor) -> dict[str, str]:
    """'1/4' and the like: each layer's output size relative to the input."""
    sizes: dict[str, int] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            sizes[name] = output.shape[-1]

        return hook

    hooks = [model.module.get_submodule(name).register_forward_hook(record(name)) for name in layers]
    with torch.inference_mode():
        model.adapter.logits(model.module, batch)
    for hook in hooks:
        hook.remove()
    return {name: f"1/{batch.shape[-1] // sizes[name]}" if sizes[name] < batch.shape[-1] else "1/1" for name in layers}


def deletion_auc(model: LoadedModel, batch: torch.Tensor, region: torch.Tensor, order: np.ndarray) -> float:
    """Area under the target probability as the pixels of ``order`` (flat indices) are zeroed in turn."""
    height, width = region.shape
    views = batch.repeat(len(FRACTIONS), 1, 1, 1)
    for step, fraction in enumerate(FRACTIONS):
        deleted = torch.from_numpy(order[: int(round(fraction * len(order)))])
        views[step, :, deleted // width, deleted % width] = 0.0
    with torch.inference_mode():
        logits = model.adapter.logits(model.module, views).float()
    probabilities = probabilities_from_logits(logits, model.spec.output.activation)[:, TARGET]
    scores = (probabilities * region).sum((-2, -1)) / region.sum()
    return float(np.trapezoid(scores.cpu().numpy(), FRACTIONS))


def real_order(attribution_map: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Flat indices (in the padded map) of the slice's real pixels, most attributed first."""
    padded_width = attribution_map.shape[-1]
    rows, cols = np.mgrid[:height, :width]
    indices = (rows * padded_width + cols).ravel()
    values = attribution_map[:height, :width].cpu().numpy().ravel()
    return indices[np.argsort(-values, kind="stable")]


@dataclasses.dataclass
class Scores:
    """Per-image figures of one map kind, averaged for the tables."""

    hits: list[float] = dataclasses.field(default_factory=list)
    mass_pred: list[float] = dataclasses.field(default_factory=list)
    mass_ref: list[float] = dataclasses.field(default_factory=list)
    density: list[float] = dataclasses.field(default_factory=list)
    corr: list[float] = dataclasses.field(default_factory=list)
    auc: list[float] = dataclasses.field(default_factory=list)
    random_auc: list[float] = dataclasses.field(default_factory=list)
    seconds: list[float] = dataclasses.field(default_factory=list)
    zero_maps: int = 0

    def add_map(self, cam: np.ndarray, predicted: np.ndarray, reference: np.ndarray, probability: np.ndarray) -> None:
        total = cam.sum()
        if total == 0:
            self.zero_maps += 1
            return
        self.hits.append(float(reference.flat[cam.argmax()]))
        self.mass_pred.append(float((cam * predicted).sum() / total))
        self.mass_ref.append(float((cam * reference).sum() / total))
        if predicted.any() and not predicted.all():
            outside = cam[~predicted].mean()
            self.density.append(float(cam[predicted].mean() / outside) if outside > 0 else np.inf)
        self.corr.append(float(np.corrcoef(cam.ravel(), probability.ravel())[0, 1]))


def mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


Explain = Callable[[LoadedModel, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, batch, labels) → map


def slicewise_method(method: str) -> Explain:
    return lambda model, batch, labels: attribution(method, model, batch, labels, TARGET)


def evaluate(
    model: LoadedModel, samples: list[Sample], explain: Explain, deletion_images: int, random_aucs: dict[str, float]
) -> Scores:
    """The maps of ``explain`` on ``samples``; the deletion check on the first ``deletion_images``.

    random_aucs: the random-order deletion AUC per image stem, filled on first use (one seeded order each).
    """
    scores = Scores()
    for index, sample in enumerate(samples):
        batch, labels, probabilities = padded_prediction(model, sample.image)
        started = time.perf_counter()
        attribution_map = explain(model, batch, labels)
        scores.seconds.append(time.perf_counter() - started)
        height, width = sample.mask.shape
        predicted = (labels[:height, :width] == TARGET).cpu().numpy()
        cam = attribution_map[:height, :width].cpu().numpy()
        scores.add_map(cam, predicted, sample.mask.astype(bool), probabilities[TARGET, :height, :width].cpu().numpy())
        if index < deletion_images:
            region = labels == TARGET
            region = region if region.any() else torch.ones_like(region)
            scores.auc.append(deletion_auc(model, batch, region, real_order(attribution_map, height, width)))
            if sample.stem not in random_aucs:
                noise = torch.from_numpy(np.random.default_rng(index).random(tuple(labels.shape)))
                random_aucs[sample.stem] = deletion_auc(model, batch, region, real_order(noise, height, width))
            scores.random_auc.append(random_aucs[sample.stem])
    return scores


def deletion_columns(scores: Scores) -> str:
    auc, random_auc = mean(scores.auc), mean(scores.random_auc)
    return f"{auc:>8.3f} {random_auc:>8.3f} {auc / random_auc:>6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="polyp_unet", help="a bundled model name or a checkpoint path")
    parser.add_argument("--images", type=int, default=20, help="test images for the deletion check and methods")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    model = slicewise.load_model(args.model, device="cpu")
    samples = load_split(shared_data_dir() / "kvasir_seg", "test")
    subset = samples[: args.images]
    default_layer = model.adapter.cam_layer(model.spec)
    print(f"machine: {machine()}")
    print(f"model: {model.name} ({model.spec.arch}); data: Kvasir-SEG test split, {len(samples)} images")
    print(f"deletion check and method table on the first {len(subset)} of them; 11 deletion steps of 10%")
    area = mean([float(s.mask.mean()) for s in samples])
    print(f"mean polyp area: {area:.1%} of the slice (what a uniform map scores as mass inside)\n")

    random_aucs: dict[str, float] = {}
    layers = CANDIDATES.get(model.spec.arch, lambda _: [default_layer])(model.module)
    resolutions = layer_resolutions(model, layers, padded_prediction(model, samples[0].image)[0])
    width = max(len(layer) for layer in layers) + 2
    print(
        f"{'layer (* = default)':<{width}} {'res':>5} {'map':<12} {'max on polyp':>12} {'mass in pred':>12} "
        f"{'mass in ref':>11} {'corr P':>6} {'del AUC':>8} {'random':>8} {'ratio':>6} {'zero maps':>9}"
    )
    for layer in layers:
        mark = " *" if layer == default_layer else ""
        for name, explain in (("gradcam", slicewise_method("gradcam")), ("LayerGradCam", layer_gradcam)):
            scores = evaluate(with_cam_layer(model, layer), samples, explain, len(subset), random_aucs)
            print(
                f"{layer + mark:<{width}} {resolutions[layer]:>5} {name:<12} {mean(scores.hits):>12.0%} "
                f"{mean(scores.mass_pred):>12.0%} {mean(scores.mass_ref):>11.0%} {mean(scores.corr):>6.2f} "
                f"{deletion_columns(scores)} {scores.zero_maps:>9}"
            )
    print("(zero maps: images where the ReLU leaves nothing; they are left out of the other columns)")

    print(
        f"\n{'method':<10} {'mass in pred':>13} {'outside':>8} {'density in/out':>15} {'del AUC':>8} "
        f"{'random':>8} {'ratio':>6} {'s/image':>8}"
    )
    for method in EXPLAIN_METHODS:
        if method == "gradcam" and default_layer is None:
            continue
        scores = evaluate(model, subset, slicewise_method(method), len(subset), random_aucs)
        inside = mean(scores.mass_pred)
        print(
            f"{method:<10} {inside:>13.0%} {1 - inside:>8.0%} {np.median(scores.density):>15.1f} "
            f"{deletion_columns(scores)} {mean(scores.seconds):>8.2f}"
        )
    print("(density in/out: median over images of the mean map value inside the predicted region / outside)")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
