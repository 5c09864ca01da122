"""Check a spec and its weights before anything is allocated: a checkpoint is untrusted input.

``build_checked`` builds the network a spec describes and turns a library constructor's refusal
(an unknown ``init_kwargs`` name, a value of the wrong type or range) into one sentence.
``check_weights`` first builds the network on PyTorch's ``meta`` device — shapes only, no memory —
so a spec with absurd widths is refused instead of attempting a terabyte allocation, and compares the
file's tensors with the network's: the same names and shapes, floating weights stored as float16,
bfloat16 or float32 (integer, boolean and float64 weights are refused), and every value finite.
``warn_if_unfinished`` says when a checkpoint comes from a training run that had not reached its end.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slicewise.errors import CheckpointError, UnfinishedRunWarning, one_line, printable
from slicewise.models.adapters.base import Adapter
from slicewise.models.spec import ModelSpec

__all__ = [
    "MAX_PARAMETER_BYTES",
    "build_checked",
    "check_weights",
    "meta_module",
    "unfinished_note",
    "warn_if_unfinished",
]

MAX_PARAMETER_BYTES = 8 * 2**30  # SAM ViT-H, the largest network slicewise reads, holds 2.6 GB
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _build_errors() -> tuple[type[BaseException], ...]:
    """What library constructors raise on arguments they refuse (transformers' strict configs included)."""
    errors: list[type[BaseException]] = [
        TypeError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
        AssertionError,
        ZeroDivisionError,
        OverflowError,
        NotImplementedError,
        RuntimeError,
        RecursionError,
    ]
    try:
        from huggingface_hub.errors import StrictDataclassError

        errors.append(StrictDataclassError)
    except ImportError:  # an older huggingface_hub without strict dataclasses
        pass
    return tuple(errors)


def _unknown_kwargs(adapter: Adapter, spec: ModelSpec) -> list[str]:
    """The ``init_kwargs`` names the adapter's ``create`` cannot take (its signature has no ``**kwargs``)."""
    try:
        parameters = inspect.signature(adapter.create).parameters.values()
    except (TypeError, ValueError):
        return []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return []
    names = {p.name for p in parameters}
    return sorted(set(adapter.kwargs(spec)) - names)


MAX_SETTING = 2**16  # no width, size or count a segmentation network is built from is larger
MAX_REPEAT = 256  # layers, blocks or residual units per stage: a bigger count takes hours to construct
_REPEAT_WORDS = ("depth", "layers", "res_units", "blocks", "repeat")


def _settings(value: Any, key: str = "") -> Any:
    """Every (key, number) in a JSON value, nested dicts and lists included."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _settings(item, str(name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _settings(item, key)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield key, value


def check_settings(spec: ModelSpec, source: str = "") -> None:
    """Refuse ``init_kwargs`` no network is built from — non-finite numbers, sizes beyond ``MAX_SETTING``,
    repeat counts beyond ``MAX_REPEAT`` — before a constructor loops or allocates for hours."""
    name = source or "the checkpoint"
    for key, value in _settings(spec.init_kwargs):
        limit = MAX_REPEAT if any(word in key.lower() for word in _REPEAT_WORDS) else MAX_SETTING
        if value != value or abs(value) in (float("inf"),) or abs(value) > limit:
            raise CheckpointError(
                one_line(
                    f"The spec in {name} sets {printable(key)[:40] or 'a value'} to {printable(value)[:24]}, "
                    f"beyond any {spec.arch} slicewise builds (at most {limit}); its init_kwargs were edited."
                )
            )


def build_checked(
    adapter: Adapter, spec: ModelSpec, source: str = "", *, build: Callable[[], nn.Module] | None = None
) -> nn.Module:
    """``adapter.build(spec)`` (or ``build()``), with the library's refusal of the spec as one ``CheckpointError``."""
    name = source or "the checkpoint"
    check_settings(spec, source)
    unknown = _unknown_kwargs(adapter, spec)
    if unknown:
        raise CheckpointError(
            one_line(
                f"The spec in {name} gives {spec.arch} the unknown setting(s) {', '.join(unknown)}; "
                "re-export the checkpoint or remove them from its init_kwargs."
            )
        )
    try:
        return build() if build is not None else adapter.build(spec)
    except _build_errors() as error:
        if isinstance(error, CheckpointError):
            raise
        detail = one_line(f"{type(error).__name__}: {error}", 140)
        raise CheckpointError(
            one_line(
                f"The spec in {name} describes a {spec.arch} that cannot be built ({detail}); "
                "its init_kwargs were edited or come from another version."
            )
        ) from error


def meta_module(adapter: Adapter, spec: ModelSpec, source: str = "") -> nn.Module | None:
    """The network on the ``meta`` device (shapes without memory), or None when the library's
    constructor computes with tensor values and cannot run there. Refuses specs over ``MAX_PARAMETER_BYTES``."""
    try:
        with torch.device("meta"):
            module = build_checked(adapter, spec, source)
    except CheckpointError as error:
        if "meta" in str(error.__cause__ or "").lower():
            return None  # e.g. ``.item()`` in a constructor; the real build will check the spec
        raise
    size = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    if size > MAX_PARAMETER_BYTES:
        raise CheckpointError(
            f"The spec in {source or 'the checkpoint'} describes a {spec.arch} of {size / 2**30:.0f} GiB of weights, "
            f"beyond slicewise's limit of {MAX_PARAMETER_BYTES / 2**30:.0f} GiB; its init_kwargs were edited."
        )
    return module


def _first(names: set[str]) -> str:
    return repr(sorted(names)[0])


def check_weights(adapter: Adapter, spec: ModelSpec, state_dict: dict[str, Any], source: str = "") -> None:
    """Refuse weights that do not fit ``spec``'s network, before the network is allocated (see the module)."""
    name = source or "the checkpoint"
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"The weights in {name} are not a mapping of names to tensors; re-export the model.")
    module = meta_module(adapter, spec, source)
    if module is not None:
        expected = module.state_dict()
        missing, unexpected = set(expected) - set(state_dict), set(state_dict) - set(expected)
        if missing or unexpected:
            parts = [f"{len(missing)} missing (first {_first(missing)})"] if missing else []
            parts += [f"{len(unexpected)} unexpected (first {_first(unexpected)})"] if unexpected else []
            raise CheckpointError(
                one_line(
                    f"The weights in {name} do not fit a {spec.arch} built from its own spec: tensors "
                    f"{' and '.join(parts)}; the file was edited or saved by another version."
                )
            )
        for key, reference in expected.items():
            if tuple(state_dict[key].shape) != tuple(reference.shape):
                raise CheckpointError(
                    one_line(
                        f"The weights in {name} do not fit a {spec.arch} built from its own spec: {key!r} has shape "
                        f"{tuple(state_dict[key].shape)}, the network needs {tuple(reference.shape)}; the file was "
                        "edited or saved by another version."
                    )
                )
        floating = {key for key, reference in expected.items() if reference.is_floating_point()}
    else:
        floating = {key for key, value in state_dict.items() if value.is_floating_point()}
    for key in sorted(floating & set(state_dict)):
        tensor = state_dict[key]
        if tensor.dtype not in WEIGHT_DTYPES:
            raise CheckpointError(
                one_line(
                    f"The weight {key!r} in {name} is stored as {str(tensor.dtype).removeprefix('torch.')}; "
                    "slicewise reads float32, float16 or bfloat16 weights, so re-save them as float32."
                )
            )
        if tensor.numel() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                one_line(
                    f"The weight {key!r} in {name} holds NaN or infinite values; the training diverged or the file "
                    "is damaged, so use an earlier checkpoint."
                )
            )


def unfinished_note(provenance: dict[str, Any], source: str = "") -> str | None:
    """The sentence for a checkpoint saved by a training run that had not reached its end, else None."""
    if provenance.get("finished") is not False:
        return None
    epoch, planned = provenance.get("best_epoch", "?"), provenance.get("epochs_planned", "?")
    return printable(
        f"{source or 'This checkpoint'} comes from a training run that had not finished (best of epoch {epoch} "
        f"of {planned} planned); resume the run with slicewise-train fit --resume, or use it knowingly."
    )


def warn_if_unfinished(provenance: dict[str, Any], source: str = "") -> None:
    """Warn (``UnfinishedRunWarning``) when a model being loaded comes from an unfinished training run."""
    note = unfinished_note(provenance, source)
    if note is not None:
        warnings.warn(UnfinishedRunWarning(note), stacklevel=3)
