"""The numeric precision and runtime a model runs in, chosen once at load time for this machine.

Lower precision pays only where the CPU has the units for it and the layers are large enough,
and it must not cost accuracy; so the choice is a table of what was *measured*
(``benchmarks/precision.py``, ``docs/speed.md``) per model family and CPU class, not a guess:

- ``fp32``: PyTorch in float32 (convolutional nets channels-last, as their adapters ask).
- ``onnx``: the network (a MONAI U-Net, or a timm encoder under smp's U-Net decoder such as the
  default polyp_lite0) or its expensive part (LiteMedSAM's TinyViT image encoder; for a taught
  model's outlines, its mask decoder too) runs in ONNX Runtime in float32 — the same arithmetic,
  fused (batch-norm folded, GELU and attention kernels): about 0.5–0.7× PyTorch's time on an AVX2
  CPU, with the same Dice. The exported graph is cached per weights, spec and library versions; a
  whole network whose height and width stay dynamic is checked at a second size before it is kept.
  Its key is computed from a checkpoint's tensors, so a model whose graph is cached predicts
  without building its PyTorch network.
- ``bf16``: ``torch.autocast`` to bfloat16 — only on CPUs with AMX or AVX-512-BF16 and only for
  families measured faster *and* within 0.005 Dice there (the MONAI U-Net and SegFormer); on
  AVX2-only CPUs bfloat16 is emulated and 15× slower (measured), so it is never chosen there.
- ``fp16``: autocast to float16 on CUDA (mixed precision), as before.

A person can always force float32: ``load_model(..., precision="fp32")``, ``--precision fp32`` on
the command line, or ``SLICEWISE_PRECISION=fp32`` in the environment. Gradients (explanations,
MC dropout, training) always use the float32 PyTorch network.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slicewise.errors import OptionError, RunStopped, printable
from slicewise.models.spec import ModelSpec

PRECISIONS = ("auto", "fp32", "bf16", "onnx")
ENV_VAR = "SLICEWISE_PRECISION"


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU offers for reduced precision: torch's kernel level and the /proc/cpuinfo flags."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): "DEFAULT", "AVX2", "AVX512", ...
    flags: frozenset[str]
    model: str = ""

    @property
    def bf16(self) -> bool:
        """Native bfloat16 matrix arithmetic (AMX tiles or AVX-512-BF16), which oneDNN uses under autocast."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags

    def describe(self) -> str:
        """E.g. ``"AVX2"`` or ``"AVX512 + AMX-BF16"``."""
        extras = [
            name for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if flag in self.flags
        ]
        return " + ".join([self.capability, *extras])


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's ``CpuFeatures`` (read once)."""
    flags: set[str] = set()
    model = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text(errors="replace")
        found = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
        flags = set(found.group(1).split()) if found else set()
        named = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
        model = named.group(1).strip() if named else ""
    return CpuFeatures(torch.backends.cpu.get_cpu_capability(), frozenset(flags), model)


@dataclass(frozen=True)
class Precision:
    """How a loaded model runs: ``name`` (fp32, bf16, onnx, fp16) and, in words, why."""

    name: str = "fp32"
    reason: str = ""

    def describe(self) -> str:
        """For the widget's "runs on" line and ``slicewise inspect``, e.g. ``"float32 in ONNX Runtime"``."""
        return {
            "fp32": "float32",
            "bf16": "bfloat16 autocast",
            "fp16": "float16 autocast (mixed precision)",
            "onnx": "float32 in ONNX Runtime",
        }.get(self.name, self.name)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The autocast context forward passes run under (none for fp32 and onnx)."""
        if self.name == "fp16" and device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        if self.name == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


FP32 = Precision("fp32", "the default")

# What was measured on CPUs (docs/speed.md): the precision that is faster and within 0.005 Dice,
# per architecture; "bf16" entries apply only where the CPU has native bfloat16 units.
# AVX2-only CPUs (measured: AMD EPYC, Zen 3): ONNX Runtime runs the MONAI U-Net, the timm U-Net (EfficientNet-
# Lite0 and ConvNeXt-atto encoders) and TinyViT at 0.5–0.7× PyTorch with the same masks; SegFormer is not switched.
CPU_CHOICES: dict[str, str] = {
    "lite_medsam": "onnx",  # the TinyViT image encoder; prompt encoder and mask decoder stay in PyTorch
    "unet": "onnx",  # the whole MONAI U-Net (any slice size)
    "timm_unet": "onnx",  # the whole smp U-Net on its timm encoder (TF "same" padding included)
}
# The architectures ONNX Runtime runs whole, and the square side each is exported at; batch, height and
# width stay dynamic. A timm_unet runs at its fixed long side (128 px for polyp_lite0) by the short side
# padded to a multiple of 32; the U-Net at any slice size.
WHOLE_NETWORK_SIDE: dict[str, int] = {"unet": 64, "timm_unet": 128}
# Chosen only on CPUs with AMX/AVX-512-BF16 (measured on an AMD EPYC with AVX-512-BF16, 2 threads): the MONAI
# U-Net at 0.33× float32 (ONNX Runtime 0.53×), Dice +0.0009; SegFormer at 0.38× (0.49× channels-last), masks
# 0.997 the same. TinyViT (0.34×, ONNX Runtime 0.33×) and the timm U-Nets (Lite0 0.69× against 0.37×;
# ConvNeXt-atto 0.988 the same) keep ONNX Runtime.
BF16_CHOICES: dict[str, str] = {"unet": "bf16", "segformer": "bf16"}


def requested_precision(precision: str | None) -> str:
    """``precision`` or, when None/"auto", the ``SLICEWISE_PRECISION`` environment variable, checked."""
    from_environment = precision in (None, "auto")
    chosen = os.environ.get(ENV_VAR, "auto") or "auto" if from_environment else precision
    if chosen not in PRECISIONS:
        raise OptionError(
            f"Unknown precision {printable(chosen)[:20]!r} (from {ENV_VAR if from_environment else 'the argument'}); "
            f"choose one of {', '.join(PRECISIONS)}."
        )
    return chosen


def choose(arch: str, device: torch.device, precision: str | None = "auto") -> Precision:
    """The precision an ``arch`` network runs in on ``device``: forced, or chosen from the measured table."""
    requested = requested_precision(precision)
    if requested == "fp32":
        return Precision("fp32", "float32 was asked for")
    if device.type == "cuda":
        if requested not in ("auto", "fp16"):
            return Precision(requested, "asked for") if requested == "bf16" else Precision("fp16", "CUDA")
        return Precision("fp16", "CUDA mixed precision")
    features = cpu_features()
    if requested == "bf16":
        return Precision("bf16", "asked for" + ("" if features.bf16 else " (this CPU emulates bfloat16: slow)"))
    if requested == "onnx":
        if CPU_CHOICES.get(arch) != "onnx":
            return Precision("fp32", f"ONNX Runtime is offered for {_onnx_offered()} only, not {arch}")
        return Precision("onnx", "asked for")
    if features.bf16 and arch in BF16_CHOICES:
        return Precision("bf16", f"measured faster on {features.describe()}")
    if arch in CPU_CHOICES and _onnxruntime_available():
        return Precision(CPU_CHOICES[arch], f"measured faster with the same masks on {features.describe()}")
    return Precision("fp32", f"measured fastest on {features.describe()}" if arch in MEASURED else "not measured")


MEASURED = frozenset({"unet", "lite_medsam", "medsam_tinyvit", "segformer", "timm_unet"})


def _onnx_offered() -> str:
    """The architectures ONNX Runtime is offered for, e.g. ``"lite_medsam, unet, timm_unet"``."""
    return ", ".join(name for name, choice in CPU_CHOICES.items() if choice == "onnx")


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class StopToken:
    """Stops, from any thread, the ONNX Runtime runs made under it (``with stopping(token):`` in the thread
    that runs them): a run in progress ends within a few operators, a later one before it starts, each
    raising ``RunStopped``. PyTorch forwards do not answer it; they run to their end. For work a newer
    request made unneeded, such as encoding a slice the person has left."""

    def __init__(self) -> None:
        self.stopped = False
        self._runs: set[Any] = set()  # onnxruntime.RunOptions of the runs in progress
        self._lock = threading.Lock()

    def stop(self) -> None:
        """End the runs in progress and refuse later ones."""
        with self._lock:
            self.stopped = True
            for run in self._runs:
                run.terminate = True

    @contextlib.contextmanager
    def watching(self, run: Any) -> Iterator[None]:
        """Within this block ``stop`` ends the run with these ``onnxruntime.RunOptions``."""
        with self._lock:
            if self.stopped:
                raise RunStopped("The run was stopped before it began: a newer request replaced it.")
            self._runs.add(run)
        try:
            yield
        finally:
            with self._lock:
                self._runs.discard(run)


_EXPORT_LOCK = threading.Lock()
_STOPPING = threading.local()  # .token: the StopToken the runs made in this thread answer to


@contextlib.contextmanager
def stopping(token: StopToken) -> Iterator[None]:
    """Within this block (in this thread), every ``OnnxTwin`` run answers ``token.stop()``."""
    previous = getattr(_STOPPING, "token", None)
    _STOPPING.token = token
    try:
        yield
    finally:
        _STOPPING.token = previous


class OnnxTwin(nn.Module):
    """A float32 network exported to ONNX and run by ONNX Runtime: tensors in (an NCHW image, or what its
    graph was exported with), one tensor out; a run made under ``stopping(token)`` ends when the token is
    stopped."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = path
        self.session = onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self._run_options = onnxruntime.RunOptions  # one per run: ``StopToken`` terminates a run through it

    def __deepcopy__(self, memo: dict) -> OnnxTwin:
        """The twin itself: its session holds no state a copy could change, and ONNX Runtime runs are
        thread-safe; a copy of a network that holds one (MC dropout's twin) shares it."""
        return self

    def forward(self, x: torch.Tensor, *fixed: torch.Tensor) -> torch.Tensor:
        """The graph's first output for ``x`` and, for a graph exported with ``fixed_inputs``, those inputs."""
        feeds = {
            name: tensor.detach().float().cpu().contiguous().numpy()
            for name, tensor in zip(self.input_names, (x, *fixed), strict=True)
        }
        run, token = self._run_options(), getattr(_STOPPING, "token", None)
        with contextlib.nullcontext() if token is None else token.watching(run):
            try:
                outputs = self.session.run(None, feeds, run)
            except Exception as error:
                if run.terminate:
                    raise RunStopped("The run was stopped: a newer request replaced it.") from error
                raise
        return torch.from_numpy(np.ascontiguousarray(outputs[0]))


def cache_dir() -> Path:
    """Where exported ONNX graphs are kept (``SLICEWISE_CACHE`` or the user cache directory)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("SLICEWISE_CACHE") or user_cache_dir("slicewise")) / "onnx"


# what an exported graph computes besides its weights: a new version of one of these exports again
EXPORTING_LIBRARIES = ("torch", "slicewise", "monai", "timm", "segmentation-models-pytorch")


@functools.cache
def _library_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for name in EXPORTING_LIBRARIES:
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            versions.append(f"{name} -")
    return ", ".join(versions)


def weights_key(state: Mapping[str, torch.Tensor], identity: str) -> str:
    """The name under which graphs exported from ``state`` are cached: a digest of each tensor's name, dtype,
    shape and bytes, of ``identity`` (the network they fit: a spec as JSON, a class name) and of the versions
    of ``EXPORTING_LIBRARIES``. Computed from a checkpoint's tensors, it finds a graph without building the network.
    """
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{identity}\n{_library_versions()}".encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"\n{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def graph_path(key: str, example_shape: tuple[int, ...], any_size: bool = False) -> Path:
    """Where the graph of the weights ``key`` names, exported at ``example_shape`` ((N, C, H, W) for an
    image; the batch axis is not part of the name), is cached."""
    sizes = "x".join(str(size) for size in example_shape[1:])
    return cache_dir() / f"{key}-{sizes}{'-any' if any_size else ''}.onnx"


def onnx_twin(
    module: nn.Module,
    example_shape: tuple[int, ...],
    *,
    threads: int | None = None,
    any_size: bool = False,
    key: str | None = None,
    fixed_inputs: tuple[tuple[int, ...], ...] = (),
) -> OnnxTwin:
    """``module`` (float32, eval) as an ``OnnxTwin``, exported once per weights and library versions and cached.

    example_shape: (N, C, H, W) of an input; the batch axis stays dynamic, and height and width too
    with ``any_size`` (for networks that take any size). Such a graph is kept only if it also computes
    what ``module`` does at twice the example's width: a shape traced as a constant (TF "same"
    padding worked out in Python, say) raises RuntimeError instead of giving wrong masks.
    key: the ``weights_key`` of the weights ``module`` was loaded from; by default, of its state dict.
    fixed_inputs: the shapes of further inputs ``module`` takes after the first, each of one fixed shape
    (a decoder's image embedding after its prompts, say); they are part of the cached name. Not checked at
    another size, so not for use with ``any_size``.
    """
    key = key or weights_key(module.state_dict(), type(module).__qualname__)
    path = graph_path(key, (*example_shape, *(size for shape in fixed_inputs for size in shape)), any_size)
    axes = {0: "n", 2: "h", 3: "w"} if any_size else {0: "n"}
    fixed_names = [f"x{index}" for index in range(1, len(fixed_inputs) + 1)]
    with _EXPORT_LOCK:  # torch.onnx.export keeps its state in module globals: one export at a time
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
            os.close(handle)
            try:
                with warnings.catch_warnings(), torch.no_grad():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        module.float().eval(),
                        (torch.zeros(example_shape), *(torch.zeros(shape) for shape in fixed_inputs)),
                        temporary,
                        dynamo=False,
                        opset_version=17,
                        input_names=["x", *fixed_names],
                        output_names=["y"],
                        dynamic_axes={"x": axes, "y": axes},
                    )
                if any_size:
                    _check_other_size(module, Path(temporary), example_shape)
                os.replace(temporary, path)
            finally:
                Path(temporary).unlink(missing_ok=True)
    return OnnxTwin(path, threads)


def cpu_twin(family: str, module: nn.Module, example_shape: tuple[int, ...], **options: Any) -> OnnxTwin | None:
    """``onnx_twin(module, example_shape, **options)`` where ``family`` runs in ONNX Runtime on this CPU
    (``choose``: measured, or forced by ``SLICEWISE_PRECISION``), else None; None too where the export or
    the runtime fails here, so that PyTorch runs ``module`` in float32."""
    if choose(family, torch.device("cpu")).name != "onnx":
        return None
    try:
        return onnx_twin(module, example_shape, **options)
    except (RuntimeError, OSError, ImportError):  # an export or runtime that fails here: PyTorch float32
        return None


def _check_other_size(module: nn.Module, path: Path, example_shape: tuple[int, ...]) -> None:
    """Raise RuntimeError unless the graph at ``path`` computes what ``module`` does at twice the example's width."""
    _, channels, height, width = example_shape
    x = torch.rand((1, channels, height, 2 * width), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = module(x)
    got = OnnxTwin(path, threads=1)(x)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-3):
        raise RuntimeError(f"the ONNX graph of {type(module).__name__} differs from it at {height}x{2 * width}")


def runtime_module(
    spec: ModelSpec,
    network: Callable[[], nn.Module],
    precision: Precision,
    *,
    state: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module | None:
    """The network inference runs, when it differs from the PyTorch one: for ``onnx``, an ``OnnxTwin`` of the
    whole network (``WHOLE_NETWORK_SIDE``: the U-Nets), or a shallow copy of a LiteMedSAM whose image encoder
    is one (its prompt encoder and mask decoder stay in PyTorch).

    network: gives the PyTorch network, building it if need be; it is not called for a whole network whose
    graph is cached under the ``weights_key`` of ``state``, the weights it would be built from (when it is
    built already, ``state`` is None and the key is of its state dict).
    """
    if precision.name != "onnx":
        return None
    if spec.arch in WHOLE_NETWORK_SIDE:
        side = WHOLE_NETWORK_SIDE[spec.arch]
        shape = (1, spec.input.channels, side, side)
        key = weights_key(network().state_dict() if state is None else state, spec.to_json())
        path = graph_path(key, shape, any_size=True)
        return OnnxTwin(path) if path.is_file() else onnx_twin(network(), shape, any_size=True, key=key)
    if spec.arch != "lite_medsam":
        raise OptionError(f"ONNX Runtime is offered for {_onnx_offered()} only, not {spec.arch}; use precision='fp32'.")
    import copy

    module = network()
    twin = copy.copy(module)  # shares every submodule and weight with ``module``
    twin._modules = dict(module._modules)
    twin._modules["image_encoder"] = onnx_twin(module.image_encoder, (1, 3, 256, 256))
    return twin
