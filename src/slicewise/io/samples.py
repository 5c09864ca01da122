"""The shared 2D dataset layout (``images/<stem>.png``, ``masks/<stem>.png``, ``split.json``): the one
split reader of slicewise and slicewise-train, the shared sample data (``../shared/data``) and the
demo's stack built from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from slicewise.errors import SlicewiseError, TrainingDataError, one_line, printable
from slicewise.io.images import read_image

DATA_ENV = "SLICEWISE_DATA"


def shared_data_dir() -> Path:
    """``$SLICEWISE_DATA``, else the first ``shared/data`` beside the working tree or a parent."""
    if os.environ.get(DATA_ENV):
        candidate = Path(os.environ[DATA_ENV])
        if candidate.is_dir():
            return candidate
        raise SlicewiseError(f"${DATA_ENV} points to {candidate}, which is not a folder.")
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent / "shared" / "data"
            if (candidate / "kvasir_seg").is_dir():
                return candidate
    raise SlicewiseError(
        f"The sample data was not found; put the shared/ folder beside the repository or set ${DATA_ENV}."
    )


def split_stems(root: str | os.PathLike, split: str = "test") -> list[str]:
    """The stems of one split (``train``, ``val`` or ``test``) from ``root/split.json``; a missing,
    malformed or empty split is one ``TrainingDataError`` sentence."""
    root = Path(root)
    split_file = root / "split.json"
    if not split_file.is_file():
        raise TrainingDataError(f"{root} has no split.json; expected images/, masks/ and split.json.")
    try:
        splits = json.loads(split_file.read_text())
    except (ValueError, RecursionError) as error:
        raise TrainingDataError(one_line(f"{split_file} is not valid JSON ({error}); fix or rewrite it.")) from None
    if not isinstance(splits, dict):
        raise TrainingDataError(f'{split_file} must hold one object of splits, such as {{"train": [...]}}.')
    if split not in splits:
        names = ", ".join(printable(k) for k in splits if k != "seed") or "none"
        raise TrainingDataError(f"{split_file} has no {split!r} split; it has {names}.")
    stems = splits[split]
    if not isinstance(stems, list) or not all(isinstance(stem, str) and stem for stem in stems):
        raise TrainingDataError(f"The {split!r} split in {split_file} must be a list of file stems (strings).")
    if not stems:
        raise TrainingDataError(f"The {split!r} split in {split_file} is empty; list at least one image in it.")
    unsafe = [stem for stem in stems if "/" in stem or "\\" in stem or stem in (".", "..")]
    if unsafe:
        raise TrainingDataError(f"The stem {printable(unsafe[0])!r} in {split_file} is a path; list file stems only.")
    return list(stems)


def sample_stack(
    dataset: str = "kvasir_seg", split: str = "test", size: int = 256
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A split's images and masks padded into stacks: (N, S, S[, 3]) images and (N, S, S) masks.

    The shared 2D sets have varied sizes (long side 256); zero-padding bottom/right puts them
    in one stack so the demo can scroll through slices.
    """
    root = shared_data_dir() / dataset
    stems = split_stems(root, split)
    first = read_image(root / "images" / f"{stems[0]}.png")
    images = np.zeros((len(stems), size, size, *first.shape[2:]), dtype=first.dtype)
    masks = np.zeros((len(stems), size, size), dtype=np.uint8)
    for i, stem in enumerate(stems):
        image = read_image(root / "images" / f"{stem}.png")
        mask = read_image(root / "masks" / f"{stem}.png")
        images[i, : image.shape[0], : image.shape[1]] = image
        masks[i, : mask.shape[0], : mask.shape[1]] = mask
    return images, masks, stems
