"""Many slices at once: a folder of images, every slice of a stack, a shard of an archive.

Slices that prepare to the same network shape run as one batch, and the work around the network
overlaps with it: a reader thread decodes and prepares the next slices while the network runs, and
a writer thread encodes and writes finished label maps (PIL, zlib and numpy release the GIL, and so
does PyTorch while it computes). Each slice's prediction is the one ``iter_predict`` gives it alone
— the same padding, the same precision (the model's, chosen at load time) — so the masks are the
same as slice by slice; only the order in which slices finish differs.

Slices that need what a batch cannot give — tiles (a slice over the tile size), an ensemble, or
sampled uncertainty — run one by one through ``iter_predict``, in the same stream.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slicewise.core import tiling, uncertainty
from slicewise.core.inference import _member_probabilities, predict, to_slice
from slicewise.core.preprocess import network_shape, prepare
from slicewise.core.types import Prediction, PredictOptions, SliceRef
from slicewise.errors import ImageError
from slicewise.models.loaded import Ensemble, LoadedModel

DEFAULT_BATCH_SIZE = 8
_DONE = object()


@dataclass(frozen=True)
class _Prepared:
    key: Hashable
    image: np.ndarray | None  # kept only for slices that run alone
    chw: np.ndarray | None  # float32 (C, H', W'), for batched slices
    height: int
    width: int


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _batchable(model: LoadedModel | Ensemble, options: PredictOptions) -> bool:
    return isinstance(model, LoadedModel) and options.uncertainty in (None, "entropy") and options.explain is None


def _reader(
    model: LoadedModel | Ensemble,
    slices: Iterable[tuple[Hashable, np.ndarray]],
    options: PredictOptions,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """Decode and prepare slices ahead of the network (the ``slices`` iterable may read files lazily)."""
    batchable = _batchable(model, options)
    try:
        for key, image in slices:
            if stop.is_set():
                return
            image = np.asarray(image)
            height, width = image.shape[:2]
            chw = prepare(image, model.spec.input) if batchable else None
            alone = chw is None or tiling.window_shape(*chw.shape[-2:], options.tile_size, model.spec.input.divisor)
            prepared = _Prepared(key, image if alone else None, None if alone else chw, height, width)
            while not stop.is_set():
                try:
                    out.put(prepared, timeout=0.1)
                    break
                except queue.Full:
                    continue
    except BaseException as error:  # noqa: BLE001 - handed to the consuming thread, which raises it
        out.put(_Failure(error))
    out.put(_DONE)


def _run_batch(model: LoadedModel, group: list[_Prepared], options: PredictOptions) -> list[Prediction]:
    """One forward for slices of the same prepared shape → their Predictions, as ``iter_predict`` makes them."""
    batch = torch.from_numpy(np.stack([p.chw for p in group])).to(model.device)
    probabilities = _member_probabilities(model, batch, None)  # (N, K, H', W')
    results = []
    for item, padded in zip(group, probabilities, strict=True):
        inner = network_shape(item.height, item.width, model.spec.input.size)
        on_slice = np.ascontiguousarray(to_slice(padded, item.height, item.width, inner).cpu().numpy())
        entropy = None
        if options.uncertainty == "entropy":
            entropy = to_slice(uncertainty.normalized_entropy(padded), item.height, item.width, inner)
        results.append(
            Prediction(
                labels=on_slice.argmax(0).astype(np.uint8),
                probabilities=on_slice,
                class_names=model.spec.output.class_names,
                model_name=model.name,
                device=model.device.type,
                slice_ref=item.key if isinstance(item.key, SliceRef) else options.slice_ref,
                uncertainty=None if entropy is None else np.ascontiguousarray(entropy.cpu().numpy()),
                uncertainty_score=None if entropy is None else uncertainty.slice_score(entropy),
            )
        )
    return results


def predict_many(
    model: LoadedModel | Ensemble,
    slices: Iterable[tuple[Hashable, np.ndarray]],
    *,
    options: PredictOptions | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prefetch: int = 2 * DEFAULT_BATCH_SIZE,
) -> Iterator[tuple[Hashable, Prediction]]:
    """Predict ``(key, slice)`` pairs, batching equal-shape slices; yields ``(key, Prediction)`` as they finish.

    slices: (H, W) or (H, W, C) arrays with any hashable key (a path, a ``SliceRef``); it is consumed
    in a reader thread, so a generator that reads files overlaps with the network. At most
    ``prefetch`` prepared slices and one ``batch_size`` group per shape wait in memory.
    """
    options = options or PredictOptions()
    if batch_size < 1:
        raise ImageError(f"batch_size must be at least 1, got {batch_size}.")
    prepared: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(model, slices, options, prepared, stop), daemon=True)
    reader.start()
    groups: dict[tuple[int, ...], list[_Prepared]] = {}
    try:
        while True:
            item = prepared.get()
            if item is _DONE:
                break
            if isinstance(item, _Failure):
                raise item.error
            if item.chw is None:  # tiled, ensemble or sampled uncertainty: alone, as iter_predict runs it
                ref = item.key if isinstance(item.key, SliceRef) else options.slice_ref
                yield item.key, predict(model, item.image, replace(options, slice_ref=ref))
                continue
            group = groups.setdefault(item.chw.shape, [])
            group.append(item)
            if len(group) >= batch_size:
                yield from zip((p.key for p in group), _run_batch(model, group, options), strict=True)
                del groups[item.chw.shape]
        for group in groups.values():
            yield from zip((p.key for p in group), _run_batch(model, group, options), strict=True)
    finally:
        stop.set()
        reader.join(timeout=5)


class Writer:
    """A thread that runs ``write(*args)`` calls in order behind the caller; ``close`` waits and re-raises."""

    def __init__(self, maxsize: int = 32) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _DONE:
                return
            if self._error is None:
                try:
                    job[0](*job[1])
                except BaseException as error:  # noqa: BLE001 - re-raised by close() in the caller's thread
                    self._error = error

    def submit(self, write: Callable[..., Any], *args: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((write, args))

    def close(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class FileResult:
    """What ``predict_files`` wrote for one input file: the label map (H, W) or (Z, H, W) and its path."""

    source: Path
    target: Path
    labels: np.ndarray
    uncertainty: np.ndarray | None = None


def file_slices(
    paths: Iterable[Path], *, rgb: bool | None = None
) -> Iterator[tuple[tuple[Path, int | None, int | None], np.ndarray]]:
    """``((path, z, depth), slice)`` for every 2D image (z and depth None) and every slice of every 3D stack
    of ``depth`` slices; each file is read when the consumer reaches it."""
    from slicewise.core.slices import is_rgb, spatial_ndim, take_slice
    from slicewise.io.lazy import open_image

    for path in paths:
        image = open_image(path)  # a big TIFF stack or a zarr store stays on disk: one slice read at a time
        colour = is_rgb(image.shape, rgb)
        ndim = spatial_ndim(image.shape, colour)
        if ndim not in (2, 3):
            raise ImageError(
                f"Expected a 2D slice or a 3D stack, but {path.name} has shape {image.shape}; "
                "save one image or one stack per file."
            )
        if ndim == 2:
            yield (path, None, None), np.asarray(image)
        else:
            for z in range(image.shape[0]):
                yield (path, z, image.shape[0]), take_slice(image, SliceRef((z,)), rgb=colour)


def predict_files(
    model: LoadedModel | Ensemble,
    paths: Iterable[Path],
    out: Path,
    *,
    options: PredictOptions | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[FileResult]:
    """Segment image files and stacks into ``out``: ``<stem>.png`` for a 2D image, ``<stem>.tif`` for a stack,
    ``<stem>.nii.gz`` in its geometry for a medical volume, and ``<stem>_uncertainty.tif`` with
    ``options.uncertainty``; reading, computing and writing overlap.

    Returns one ``FileResult`` per input, in input order, once every file is written.
    """
    from slicewise.io.images import output_stem, prediction_path, write_prediction, write_tiff

    paths = list(paths)
    options = options or PredictOptions()
    partial: dict[Path, dict[int, Prediction]] = {}
    results: dict[Path, FileResult] = {}

    def finish(path: Path, labels: np.ndarray, maps: np.ndarray | None) -> None:
        target = prediction_path(out, path, labels.ndim)
        results[path] = FileResult(path, target, labels, maps)
        writer.submit(write_prediction, target, path, labels)
        if maps is not None:
            writer.submit(write_tiff, out / f"{output_stem(path)}_uncertainty.tif", maps)

    with Writer() as writer:
        slices = file_slices(paths)
        for (path, z, depth), prediction in predict_many(model, slices, options=options, batch_size=batch_size):
            if z is None:
                finish(path, prediction.labels, prediction.uncertainty)
                continue
            done = partial.setdefault(path, {})
            done[z] = replace(prediction, probabilities=np.empty(0, np.float32))  # keep labels, drop K×H×W
            if len(done) == depth:
                del partial[path]
                ordered = [done[i] for i in range(len(done))]
                labels = np.stack([p.labels for p in ordered])
                maps = np.stack([p.uncertainty for p in ordered]) if ordered[0].uncertainty is not None else None
                finish(path, labels, maps)
    return [results[path] for path in paths]
