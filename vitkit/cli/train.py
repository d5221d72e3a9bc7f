"""``vitkit train``, ``vitkit recipes`` and ``vitkit download``."""

from __future__ import annotations

import argparse
import dataclasses
import sys


# options whose None means "chosen from the model and the data" (vitkit.training.defaults), not "off"
AUTO = {"val_fraction", "train_resize", "hflip", "crop_pct", "interpolation", "resize_mode", "mean", "std",
        "channels_last", "memory_budget"}  # fmt: skip


def _options_epilog() -> str:
    """One line per option: its default and the comment beside its field in TrainConfig."""
    import inspect
    import re

    from vitkit.training.config import TrainConfig

    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", inspect.getsource(TrainConfig), flags=re.M))
    explicit = {"model", "data", "epochs", "batch_size", "image_size", "lr", "output"}
    lines = ["every other training option is taken as --name value (a recipe's keys, with - for _):"]
    for f in dataclasses.fields(TrainConfig):
        if f.name not in explicit:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            shown = ("auto" if f.name in AUTO else "none") if default is None else default
            lines.append(f"  --{f.name.replace('_', '-'):<24} {str(shown):<17} {comments.get(f.name, '')}".rstrip())
    return "\n".join(lines)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a data set (a recipe, flags, or both)",
        description="Train a classifier. Precedence: defaults, then --recipe, then the command line.",
        epilog=_options_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", help="a shipped recipe name (see `vitkit recipes`) or a YAML file")
    p.add_argument("--model", help="model preset (see `vitkit models`)")
    p.add_argument(
        "--data", help="digits | fashion-mnist[:PATH] | cifar10[:PATH] | flowers[:PATH] | folder:PATH | PATH"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--output", help="run folder (default runs/MODEL-DATA)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="RUN",
        help="continue a run from its last checkpoint with its saved configuration: --resume RUN (or --resume "
        "with --output RUN); only --epochs (to extend it), --workers, --device and --compile may change",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run the output folder holds (its files are removed)"
    )
    p.set_defaults(run=run_train, accepts_extra=True)

    p = sub.add_parser("recipes", help="list the shipped training recipes")
    p.set_defaults(run=run_recipes)

    p = sub.add_parser("samples", help="write a few validation images of a data set as PNG files")
    p.add_argument("data", help="data spec, e.g. digits")
    p.add_argument("--output", required=True, help="folder to write into")
    p.add_argument("--count", type=int, default=8)
    p.set_defaults(run=run_samples)

    p = sub.add_parser("download", help="download a public data set into the cache (checksums verified)")
    p.add_argument("name", choices=["fashion-mnist", "cifar10", "flowers"])
    p.add_argument("--dir", help="cache folder (default $VITKIT_CACHE or ~/.cache/vitkit)")
    p.set_defaults(run=run_download)

    p = sub.add_parser(
        "pack",
        help="pack a folder of images into WebDataset tar shards with an index (--data OUT reads them)",
        description="Decode every image of FOLDER (class sub-folders, optionally under train/ and val/), shrink "
        "it to --max-side, re-encode it as JPEG into tar shards (KEY.jpg + KEY.cls, readable by the webdataset "
        "library) with an index for random access. Unreadable files are listed and skipped. An interrupted "
        "pack continues where it stopped when run again.",
    )
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--max-side", type=int, default=512, help="longest side kept, in pixels (default 512)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality, 1-100 (default 90)")
    p.add_argument("--shard-images", type=int, default=1000, help="images per shard (default 1000)")
    p.add_argument("--workers", type=int, default=0, help="processes encoding images; 0: one per core, up to 8")
    p.set_defaults(run=run_pack)


def parse_overrides(extra: list[str]) -> dict[str, str | bool]:
    """``--weight-decay 0.05 --channels-last --ema-decay=0.999`` -> {weight_decay: "0.05", channels_last: True, ...}."""
    overrides: dict[str, str | bool] = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--"):
            raise ValueError(f"Unexpected argument '{token}'; training options are written --name value.")
        name, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(extra) and not extra[i + 1].startswith("--"):
                value = extra[i + 1]
                i += 1
            else:
                value = True  # a bare flag such as --channels-last
        overrides[name.replace("-", "_")] = value
        i += 1
    return overrides


def run_train(args: argparse.Namespace) -> int:
    from vitkit.training import TrainingDiverged, build_config, train

    explicit = {k: getattr(args, k) for k in ("model", "data", "epochs", "batch_size", "image_size", "lr", "output")}
    overrides = {**parse_overrides(args.extra), **{k: v for k, v in explicit.items() if v is not None}}
    if args.resume:
        folder = args.resume if isinstance(args.resume, str) else args.output
        if not folder:
            raise ValueError("--resume needs the run folder: vitkit train --resume RUN.")
        from vitkit.training.runs import resume_config

        config = resume_config(folder, overrides, args.recipe)
    else:
        config = build_config(args.recipe, overrides)
    try:
        train(config, resume=bool(args.resume), overwrite=args.overwrite)
    except TrainingDiverged as e:
        raise ValueError(f"training diverged: {e}") from None
    except KeyboardInterrupt:
        raise ValueError(f"interrupted; continue with vitkit train --resume {config.resolved_output()}") from None
    return 0


def run_recipes(args: argparse.Namespace) -> int:
    from vitkit.training.config import RECIPE_DIR

    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        first = next((line[2:] for line in path.read_text().splitlines() if line.startswith("# ")), "")
        print(f"{path.stem:<30} {first}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vitkit.data.download import fetch

    print(fetch(args.name, Path(args.dir) if args.dir else None))
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from vitkit.data.pack import pack

    result = pack(args.folder, args.out, args.max_side, args.quality, args.shard_images, args.workers)
    counts = ", ".join(str(n) if split == "all" else f"{n} {split}" for split, n in result.counts.items())
    reused = f", {result.reused_shards} shards kept from the interrupted run" if result.reused_shards else ""
    print(f"packed {counts} images into {result.folder} in {result.seconds:.1f} s{reused}")
    if result.skipped:
        print(f"{len(result.skipped)} unreadable files skipped (listed in {result.folder}/pack.json):", file=sys.stderr)
        for path, why in result.skipped[:10]:
            print(f"  {path}: {why}", file=sys.stderr)
    return 0


def run_samples(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vitkit.data.sources import list_data, save_samples

    for path in save_samples(list_data(args.data), Path(args.output), args.count):
        print(path)
    return 0
