"""``vitkit eval`` and ``vitkit predict``."""

from __future__ import annotations

import argparse
import json
import sys


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1, top-5, per-class accuracy and confusion matrix of a checkpoint")
    p.add_argument("checkpoint", help="a run folder (uses best.json) or a checkpoint .json / .safetensors")
    p.add_argument(
        "--data",
        help="data spec as for train (default: the run's own, whose validation split is scored with the pixels and "
        "batches training's validation pass used, so the top-1 is the one the run logged); other data, such as a "
        "held-out test folder, is scored whole; classes are matched by name and may be a subset",
    )
    p.add_argument(
        "--split",
        default="auto",
        choices=["auto", "train", "val", "all"],
        help="which images to score (auto: the validation split of the run's own data, every image of other data)",
    )
    p.add_argument("--batch-size", type=int, help="default: the one training's validation pass used")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--tta",
        default="none",
        choices=["none", "hflip"],
        help="test-time augmentation: hflip averages the probabilities of each image and its mirror (twice the "
        "compute; only for models trained with horizontal flips; an exported model still sees one view)",
    )
    p.add_argument("--confusion", metavar="PNG", help="draw the confusion matrix into this PNG file")
    p.add_argument("--json", action="store_true", help="end with one line of JSON (top1, top5, loss, per_class, ...)")
    p.set_defaults(run=run_eval)

    p = sub.add_parser("predict", help="classify images or folders of images with a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(run=run_predict)


def run_eval(args: argparse.Namespace) -> int:
    from vitkit.inference import evaluate

    result = evaluate(
        args.checkpoint,
        args.data,
        args.batch_size,
        args.device,
        split=args.split,
        confusion_png=args.confusion,
        tta=args.tta,
    )
    print(result.data)
    if result.warning:
        print(result.warning, file=sys.stderr)
    print(f"top-1 {result.top1:.2%}   top-5 {result.top5:.2%}   loss {result.loss:.4f}   ({result.count} images)")
    width = max(len(n) for n in result.per_class)
    for name, acc in result.per_class.items():
        print(f"  {name:<{width}}  {'-' if acc is None else f'{acc:.2%}'}")
    if result.confusion_png:
        print(f"confusion matrix: {result.confusion_png}")
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from vitkit.inference import predict

    from vitkit.errors import NothingDone, OptionError

    if args.top_k < 1:
        raise OptionError("top_k", f"must be 1 or more, not {args.top_k}.")
    predictions = predict(args.checkpoint, args.inputs, args.top_k, device=args.device)
    for p in predictions:
        if args.json:
            record = (
                {"path": p.path, "error": p.error}
                if p.error
                else {"path": p.path, "top": [{"class": c, "probability": round(v, 6)} for c, v in p.top]}
            )
            print(json.dumps(record))
        elif p.error:
            print(f"{p.path}: skipped ({p.error})")
        else:
            print(f"{p.path}: " + ", ".join(f"{c} {v:.1%}" for c, v in p.top))
    skipped = sum(p.error is not None for p in predictions)
    if skipped == len(predictions):
        raise NothingDone(f"no input could be read as an image ({skipped} given); nothing was classified.")
    if skipped:
        print(f"{skipped} of {len(predictions)} inputs could not be read and were skipped", file=sys.stderr)
    return 0
