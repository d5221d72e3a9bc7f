"""``vitkit models`` and ``vitkit summary``: what the zoo holds."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model presets with parameters, MACs and input size")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'mobilevit*'")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (as in the README)")
    p.set_defaults(run=run_models)

    p = sub.add_parser(
        "import",
        help="make a run folder from weights trained elsewhere (the keras.io example's .weights.h5, timm, hub, URL)",
        description="Load WEIGHTS (a file, URL or hub name) into --model and write RUN/best.safetensors + best.json, "
        "so that predict, eval, export, bench and serve take it like a trained run.",
    )
    p.add_argument("weights", help="a weights file (.weights.h5, .keras, .safetensors, .pt), a URL or a hub name")
    p.add_argument("--model", help="the preset the weights fit (default: inferred from hub and ml-cvnets weights)")
    p.add_argument("--classes", help="class names in the order the weights were trained with, comma-separated")
    p.add_argument("--data", help="data spec of the classes' images; recorded for eval and export")
    p.add_argument("--val-fraction", type=float, help="validation share of a --data folder (default 0.1)")
    p.add_argument("--output", help="run folder to write (default runs/imported-MODEL)")
    p.add_argument("--overwrite", action="store_true", help="replace the run the output folder holds")
    p.set_defaults(run=run_import)

    p = sub.add_parser("summary", help="per-stage output shapes, parameters and MACs of a model (like Keras' summary)")
    p.add_argument("model", help="a preset name (see `vitkit models`)")
    p.add_argument("--image-size", type=int, help="input side in pixels (default: the model's)")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier size (default: 1000)")
    p.add_argument("--layers", action="store_true", help="one row per layer instead of per stage")
    p.set_defaults(run=run_summary)


def run_models(args: argparse.Namespace) -> int:
    from vitkit.models import create_model, get_model_spec, list_models
    from vitkit.models.summary import format_macs, summarize

    names = list_models(args.pattern)
    if not names:
        raise ValueError(f"No model matches '{args.pattern}'; run `vitkit models` to list them all.")
    rows = []
    for name in names:
        s = summarize(create_model(name))
        rows.append(
            (
                name,
                f"{s.trainable_params:,}",
                format_macs(s.macs),
                str(s.input_shape[-1]),
                get_model_spec(name).description,
            )
        )
    header = ("model", "params (1000 classes)", "MACs", "input", "description")
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join(["---"] + ["---:"] * 3 + ["---"]) + "|")
        for row in rows:
            print("| " + " | ".join((f"`{row[0]}`",) + row[1:]) + " |")
        return 0
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    print(
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
        + "  "
        + header[4]
    )
    for row in rows:
        print(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + "  " + row[4]
        )
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from vitkit.models import create_model
    from vitkit.models.summary import summarize

    if args.image_size is not None and args.image_size < 32:
        raise ValueError(f"--image-size {args.image_size} is too small; use 32 pixels or more.")
    print(summarize(create_model(args.model, num_classes=args.num_classes), args.image_size, layers=args.layers))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from vitkit.weights.importer import import_weights

    names = [c.strip() for c in args.classes.split(",")] if args.classes else None
    path = import_weights(
        args.weights, args.model, args.output, names, args.data, args.val_fraction, overwrite=args.overwrite
    )
    print(
        f"wrote {path.parent} ({path.name}); next: vitkit predict {path.parent} IMAGE, vitkit export {path.parent} --format tflite"
    )
    return 0
