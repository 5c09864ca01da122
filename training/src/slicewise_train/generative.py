"""Generative augmentation (GenSeg-style): a mask-to-image generator makes extra training pairs.

After Zhang et al., *Generative AI enables medical image segmentation in ultra low-data
regimes* (Nature Communications 2025). Masks of the training set are augmented geometrically
(flips, crop/pad, scale 0.8–1.2, translate ±10 %, rotate ±15°, shear ±8°); a pix2pix generator
(U-Net generator, PatchGAN discriminator, LSGAN + L1), pre-trained on the run's own labelled
pairs, turns each augmented mask into an image; the segmenter trains on real + λ·synthetic pairs.

Two forms (``GenerativeConfig.end_to_end``):

- separate: the generator is frozen after pre-training.
- end to end: after every (``unroll_every``-th) segmenter step, the generator takes one pix2pix
  step on the real batch and one step along the hypergradient of the segmenter's validation
  loss, through a one-step unrolled SGD update of the segmenter (``torch.func.functional_call``)::

      w' = w − η ∇_w [L_real(w) + λ L_syn(w, G)]        L_val(w') → ∂/∂G  (second order, exact)

Networks come from MONAI (``UNet`` as the generator, ``PatchDiscriminator``); nothing pretrained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.networks.nets import PatchDiscriminator, UNet
from monai.transforms import Compose, RandAffine, RandFlip, RandSpatialCrop, SpatialPad
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from slicewise.errors import SlicewiseError
from slicewise_train.config import GENERATORS, GenerativeConfig, TrainConfig
from slicewise_train.loop import SliceDataset

if TYPE_CHECKING:
    from slicewise_train.loop import Setup

MIN_PAIRS = 8  # fewer labelled pairs than this cannot pre-train a generator worth its cost
GENERATOR_FILE = "generator.safetensors"
GRID_FILE = "synthetic_pairs.png"
FINAL_GRID_FILE = "synthetic_pairs_final.png"

__all__ = [
    "MIN_PAIRS",
    "Synthesizer",
    "build_discriminator",
    "build_generator",
    "mask_augmentation",
    "one_hot",
    "prepare_synthesis",
]


def mask_augmentation(side: int) -> Compose:
    """GenSeg's mask augmentation on one (1, S, S) label map: flips, crop/pad, affine (nearest).

    Scale 0.8–1.2, translate ±10 % of the side, rotate ±15°, shear ±8°; crop/pad pads by an
    eighth of the side and crops a random ``side`` window back (pix2pix's random crop).
    """
    pad = max(1, side // 8)
    shear = math.tan(math.radians(8))
    return Compose(
        [
            RandFlip(prob=0.5, spatial_axis=0),
            RandFlip(prob=0.5, spatial_axis=1),
            SpatialPad(spatial_size=(side + 2 * pad, side + 2 * pad)),
            RandSpatialCrop(roi_size=(side, side), random_size=False),
            RandAffine(
                prob=1.0,
                rotate_range=(math.radians(15),),
                shear_range=(shear, shear),
                translate_range=(0.1 * side, 0.1 * side),
                scale_range=(0.2, 0.2),
                mode="nearest",
                padding_mode="zeros",
            ),
        ]
    )


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """(N, 1, H, W) integer labels → (N, classes, H, W) float32, the generator's input."""
    return nn.functional.one_hot(labels[:, 0].long(), classes).permute(0, 3, 1, 2).float()


def build_generator(size: str, classes: int, channels: int, *, bounded: bool) -> nn.Module:
    """pix2pix's U-Net generator as a MONAI UNet: one-hot mask in, image in the network frame out.

    bounded: the images are normalised to [0, 1] (percentile normalisation): a sigmoid ends the
    network; otherwise its output is linear. Dropout stays on while generating (pix2pix's noise).
    """
    levels = GENERATORS[size]
    unet = UNet(
        spatial_dims=2,
        in_channels=classes,
        out_channels=channels,
        channels=levels,
        strides=(2,) * (len(levels) - 1),
        num_res_units=0,
        norm="instance",
        dropout=0.2,
    )
    return nn.Sequential(unet, nn.Sigmoid()) if bounded else unet


def build_discriminator(size: str, classes: int, channels: int) -> nn.Module:
    """pix2pix's 70×70 PatchGAN on (mask, image) pairs (MONAI ``PatchDiscriminator``, 3 layers)."""
    return PatchDiscriminator(
        spatial_dims=2, channels=GENERATORS[size][0] * 2, in_channels=classes + channels, num_layers_d=3
    )


class _Forward(nn.Module):
    """The segmenter's forward (adapter and all) as a module, so ``functional_call`` can swap its weights."""

    def __init__(self, net: nn.Module, forward: Any) -> None:
        super().__init__()
        self.net = net
        self.forward_fn = forward

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_fn(self.net, images, tuple(images.shape[-2:]))


class Synthesizer:
    """The generator, its discriminator and optimisers, and the steps the training loop calls."""

    def __init__(
        self, settings: GenerativeConfig, classes: int, channels: int, side: int, device: torch.device, *, bounded: bool
    ) -> None:
        divisor = 2 ** (len(GENERATORS[settings.generator]) - 1)
        if side % divisor:
            raise SlicewiseError(
                f"The {settings.generator!r} generator needs a canvas side divisible by {divisor}; this run's is "
                f"{side}; choose a size that is, or a smaller generator."
            )
        self.settings = settings
        self.classes = classes
        self.side = side
        self.device = device
        self.generator = build_generator(settings.generator, classes, channels, bounded=bounded).to(device)
        self.discriminator = build_discriminator(settings.generator, classes, channels).to(device)
        self.masks = mask_augmentation(side)
        self.summary: dict[str, Any] = {"settings": dataclasses.asdict(settings)}
        self._pretrained: dict[str, torch.Tensor] = {}
        self._last_masks: torch.Tensor | None = None
        self._val: tuple[torch.Tensor, torch.Tensor] | None = None
        self._end_to_end: list[dict[str, float]] = []
        self._grid_pairs: Dataset | None = None
        self._optimizers()

    def _optimizers(self) -> None:
        rate, betas = self.settings.generator_lr, (0.5, 0.999)
        self.optim_g = torch.optim.Adam(self.generator.parameters(), lr=rate, betas=betas)
        self.optim_d = torch.optim.Adam(self.discriminator.parameters(), lr=rate, betas=betas)
        self.optim_hyper = torch.optim.Adam(self.generator.parameters(), lr=self.settings.hyper_lr, betas=betas)

    # --- pix2pix -------------------------------------------------------------------------------

    def gan_step(self, labels: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
        """One pix2pix step on real pairs ((N, 1, S, S) labels, (N, C, S, S) images): D, then G."""
        self.generator.train()
        self.discriminator.train()
        condition = self._condition(labels)
        real = images.to(self.device, condition.dtype)
        fake = self.generator(condition)
        mse = nn.functional.mse_loss
        self.optim_d.zero_grad(set_to_none=True)
        pred_real = self.discriminator(torch.cat([condition, real], 1))[-1]
        pred_fake = self.discriminator(torch.cat([condition, fake.detach()], 1))[-1]
        loss_d = 0.5 * (mse(pred_real, torch.ones_like(pred_real)) + mse(pred_fake, torch.zeros_like(pred_fake)))
        loss_d.backward()
        self.optim_d.step()
        self.optim_g.zero_grad(set_to_none=True)
        pred = self.discriminator(torch.cat([condition, fake], 1))[-1]
        adversarial = mse(pred, torch.ones_like(pred))
        l1 = nn.functional.l1_loss(fake, real)
        (adversarial + self.settings.l1_weight * l1).backward()
        self.optim_g.step()
        return {"loss_d": loss_d.item(), "loss_g_gan": adversarial.item(), "l1": l1.item()}

    def pretrain(self, pairs: Dataset, batch_size: int, seed: int) -> list[dict[str, float]]:
        """``pretrain_epochs`` of pix2pix on the labelled pairs (flipped with their masks)."""
        loader = DataLoader(pairs, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
        history = []
        started = time.time()
        epochs = self.settings.pretrain_epochs
        for epoch in tqdm(range(epochs), desc="generator pre-training", leave=False, disable=None):
            transform = getattr(pairs, "transform", None)
            if transform is not None:
                transform.set_random_state(seed=seed + epoch)
            steps = [self.gan_step(labels, images) for images, labels in loader]
            history.append({"epoch": epoch + 1, **{k: float(np.mean([s[k] for s in steps])) for k in steps[0]}})
        self.summary["pretrain_seconds"] = time.time() - started
        return history

    def remember_pretrained(self) -> None:
        """Keep the pre-trained weights; ``start`` returns to them (each learning-rate trial, a resume)."""
        self._pretrained = {
            f"{name}.{k}": v.detach().clone()
            for name, module in (("generator", self.generator), ("discriminator", self.discriminator))
            for k, v in module.state_dict().items()
        }

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, module in (("generator", self.generator), ("discriminator", self.discriminator)):
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})

    # --- the segmenter's side ------------------------------------------------------------------

    def augment_masks(self, labels: torch.Tensor) -> torch.Tensor:
        """Each (1, S, S) mask of a batch through ``mask_augmentation``; seeded from torch's generator."""
        self.masks.set_random_state(seed=int(torch.randint(2**31 - 1, ()).item()))
        out = [torch.as_tensor(np.asarray(self.masks(label.cpu()))) for label in labels]
        return torch.stack(out).long().to(self.device)

    @torch.no_grad()
    def synthesize(self, masks: torch.Tensor) -> torch.Tensor:
        """Images for (N, 1, S, S) label maps → (N, C, S, S) in the network frame."""
        self.generator.train()  # dropout as noise, as pix2pix does at test time; instance norm has no running stats
        return self.generator(self._condition(masks))

    def _condition(self, labels: torch.Tensor) -> torch.Tensor:
        """The generator's input: one-hot labels on its device, in its dtype."""
        dtype = next(self.generator.parameters()).dtype
        return one_hot(labels.to(self.device), self.classes).to(dtype)

    def start(self) -> None:
        """Start of a training run (or a learning-rate trial): back to the pre-trained generator."""
        self._end_to_end = []
        if self.settings.end_to_end and self._pretrained:
            self.load_state(self._pretrained)
            self._optimizers()

    def finish(self, out: Path) -> dict[str, Any]:
        """End of the run: the end-to-end generator's grid and a JSON summary for ``history.json``."""
        summary = dict(self.summary)
        if self.settings.end_to_end and self._end_to_end:
            if self._grid_pairs is not None:
                self.write_grid(out / FINAL_GRID_FILE, self._grid_pairs)
            steps = self._end_to_end
            summary["end_to_end_steps"] = len(steps)
            summary["end_to_end_mean"] = {k: float(np.mean([s[k] for s in steps])) for k in steps[0]}
            summary["end_to_end_last"] = steps[-1]
        return summary

    def segmenter_loss(
        self, setup: Setup, network: nn.Module, labels: torch.Tensor, loss_fn: Any, autocast: Any
    ) -> torch.Tensor:
        """λ × the segmentation loss on one synthetic pair per real mask of the batch (augmented masks)."""
        masks = self.augment_masks(labels)
        self._last_masks = masks
        images = self.synthesize(masks)
        with autocast:
            logits = setup.forward(network, images, tuple(masks.shape[-2:]))
        return self.settings.weight * loss_fn(_full_precision(logits), masks)

    def after_backward(
        self,
        setup: Setup,
        trainable: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        loss_fn: Any,
        learning_rate: float,
        step: int,
    ) -> dict[str, float] | None:
        """End to end only: one pix2pix step on the real batch, then one hypergradient step.

        Called after the segmenter's backward pass and before its optimiser step, when each
        parameter's ``.grad`` holds ∇_w of the whole training loss; the unrolled update
        w' = w − η·grad keeps that value and adds the generator's dependence through the
        synthetic term, so ∂L_val(w')/∂G is the exact one-step hypergradient.
        """
        if not self.settings.end_to_end or self._last_masks is None or step % self.settings.unroll_every:
            return None
        losses = self.gan_step(labels, inputs)
        losses["val_loss"] = self.hyper_step(setup, trainable, loss_fn, learning_rate)
        self._end_to_end.append(losses)
        return losses

    def hyper_step(self, setup: Setup, trainable: nn.Module, loss_fn: Any, learning_rate: float) -> float:
        """One Adam step of the generator along ∂L_val(w − η ∇_w L_train)/∂G; returns L_val(w')."""
        hyper, value = self.hypergradient(setup, trainable, loss_fn, learning_rate)
        self.optim_hyper.zero_grad(set_to_none=True)
        for p, g in zip(self.generator.parameters(), hyper, strict=True):
            p.grad = g
        self.optim_hyper.step()
        return value

    def hypergradient(
        self, setup: Setup, trainable: nn.Module, loss_fn: Any, learning_rate: float
    ) -> tuple[list[torch.Tensor | None], float]:
        """(∂L_val(w')/∂G for each generator parameter, L_val(w')), w' = w − η·(each ``.grad``).

        The segmenter's ``.grad`` must hold ∇_w of its training loss on the batch whose
        augmented masks ``segmenter_loss`` last drew.
        """
        assert self._last_masks is not None
        forward = _Forward(trainable, setup.forward)
        named = {f"net.{k}": p for k, p in trainable.named_parameters() if p.requires_grad}
        masks = self._last_masks
        self.generator.train()
        synthetic = self.generator(self._condition(masks))
        loss_syn = self.settings.weight * loss_fn(functional_call(forward, named, (synthetic,)), masks)
        grads = torch.autograd.grad(loss_syn, list(named.values()), create_graph=True, allow_unused=True)
        unrolled = {}
        for (name, p), g in zip(named.items(), grads, strict=True):
            full = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
            direction = full if g is None else full - g.detach() + g  # value: the full gradient
            unrolled[name] = p.detach() - learning_rate * direction
        images, val_labels = self._validation_batch(setup, len(masks))
        val_loss = loss_fn(functional_call(forward, unrolled, (images,)), val_labels)
        hyper = torch.autograd.grad(val_loss, list(self.generator.parameters()), allow_unused=True)
        return [None if g is None else g.detach() for g in hyper], float(val_loss.item())

    def _validation_batch(self, setup: Setup, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._val is None:
            items = [setup.val_set[i] for i in range(len(setup.val_set))]
            self._val = (torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]))
        images, labels = self._val
        pick = torch.randperm(len(images))[:count]
        return images[pick].to(self.device), labels[pick].to(self.device)

    # --- what a person looks at ----------------------------------------------------------------

    def write_grid(self, path: Path, pairs: Dataset, count: int = 8) -> Path:
        """A PNG grid, one row per training pair: image, mask, augmented mask, synthetic image."""
        items = [pairs[i] for i in range(min(count, len(pairs)))]
        labels = torch.stack([label for _, label in items])
        state = torch.random.get_rng_state()
        torch.manual_seed(0)
        masks = self.augment_masks(labels)
        synthetic = self.synthesize(masks).cpu()
        torch.random.set_rng_state(state)
        rows = []
        for (image, label), mask, fake in zip(items, masks.cpu(), synthetic, strict=True):
            tiles = [_to_rgb(image), _mask_rgb(label, self.classes), _mask_rgb(mask, self.classes), _to_rgb(fake)]
            rows.append(np.concatenate([_border(t) for t in tiles], axis=1))
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)
        return path


def _full_precision(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) as float32 for the loss; float32 and float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _to_rgb(chw: torch.Tensor) -> np.ndarray:
    x = chw.detach().float().numpy()
    low, high = float(x.min()), float(x.max())
    x = (x - low) / (high - low) if high > low else np.zeros_like(x)
    x = (x * 255).round().astype(np.uint8)
    return np.repeat(x, 3, axis=0).transpose(1, 2, 0) if x.shape[0] == 1 else x[:3].transpose(1, 2, 0)


def _mask_rgb(label: torch.Tensor, classes: int) -> np.ndarray:
    gray = (label[0].numpy().astype(np.float32) * (255 / max(1, classes - 1))).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _border(tile: np.ndarray, width: int = 2) -> np.ndarray:
    return np.pad(tile, ((width, width), (width, width), (0, 0)), constant_values=255)


def _fingerprint(config: TrainConfig, pairs: list[dict[str, np.ndarray]], classes: int, side: int) -> str:
    """What a pre-trained generator depends on: reused from the run folder only when all of it matches."""
    s = config.generative
    content = hashlib.sha1()
    for pair in pairs:
        content.update(np.ascontiguousarray(pair["image"]).tobytes())
        content.update(np.ascontiguousarray(pair["label"]).tobytes())
    key = {
        "generator": s.generator,
        "pretrain_epochs": s.pretrain_epochs,
        "l1_weight": s.l1_weight,
        "generator_lr": s.generator_lr,
        "data": [Path(d).name for d in config.data],
        "pairs": content.hexdigest(),
        "size": config.size,
        "normalization": config.normalization,
        "seed": config.seed,
        "batch_size": config.batch_size,
        "classes": classes,
        "side": side,
    }
    return json.dumps(key, sort_keys=True)


def prepare_synthesis(
    config: TrainConfig, setup: Setup, out: Path, device: torch.device, *, world: int = 1
) -> Synthesizer:
    """The run's synthesizer: pre-trained on its labelled pairs (or reused from ``out``), grid written.

    ``out/generator.safetensors`` keeps the pre-trained generator and discriminator with a
    fingerprint of what they depend on; a later run in the same folder with the same data and
    settings reuses them instead of training again.
    """
    settings = config.generative
    if not isinstance(setup.train_set, SliceDataset):
        raise SlicewiseError(
            f"Generative augmentation needs a model trained on images; {setup.spec.arch} trains a head on "
            "frozen encoder features; use augmentation 'none' for it."
        )
    if world > 1:
        raise SlicewiseError(
            "Generative augmentation runs in one process; train it without torchrun, or use augmentation 'standard'."
        )
    pairs = setup.train_set.items
    if len(pairs) < MIN_PAIRS:
        raise SlicewiseError(
            f"Generative augmentation pre-trains its generator on the run's labelled pairs and needs at least "
            f"{MIN_PAIRS}; the training split has {len(pairs)}; add labelled images or use augmentation 'standard'."
        )
    classes = setup.spec.output.num_classes
    channels = setup.spec.input.channels
    side = int(pairs[0]["image"].shape[-1])
    synthesizer = Synthesizer(
        settings, classes, channels, side, device, bounded=setup.spec.input.normalization == "percentile"
    )
    flipped = _PairView(pairs)
    fingerprint = _fingerprint(config, pairs, classes, side)
    saved = out / GENERATOR_FILE
    reused = False
    if saved.exists():
        with safe_open(saved, framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("fingerprint") == fingerprint:
                synthesizer.load_state({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
                synthesizer.summary["pretrain"] = json.loads(metadata.get("history", "[]"))
                synthesizer.summary["pretrain_seconds"] = float(metadata.get("seconds", "nan"))
                reused = True
    if not reused:
        torch.manual_seed(config.seed)
        history = synthesizer.pretrain(flipped, config.batch_size, config.seed)
        synthesizer.summary["pretrain"] = history
        synthesizer.remember_pretrained()
        save_file(
            {k: v.cpu().contiguous() for k, v in synthesizer._pretrained.items()},
            saved,
            metadata={
                "fingerprint": fingerprint,
                "history": json.dumps(history),
                "seconds": str(synthesizer.summary["pretrain_seconds"]),
            },
        )
    synthesizer.remember_pretrained()
    synthesizer.summary["reused_pretrained"] = reused
    synthesizer._grid_pairs = _PairView(pairs, flips=False)
    synthesizer.write_grid(out / GRID_FILE, synthesizer._grid_pairs)
    return synthesizer


class _PairView(SliceDataset):
    """The prepared (unaugmented) training pairs, optionally flipped together, as (image, label) tensors."""

    def __init__(self, items: list[dict[str, np.ndarray]], *, flips: bool = True) -> None:
        from monai.transforms import RandFlipd

        self.items = items
        keys = ("image", "label")
        self.transform = (
            Compose([RandFlipd(keys=keys, prob=0.5, spatial_axis=0), RandFlipd(keys=keys, prob=0.5, spatial_axis=1)])
            if flips
            else None
        )
