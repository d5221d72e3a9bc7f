"""Fashion-MNIST recipe: test top-1, epochs and wall time on this machine.

    python benchmarks/fashion_mnist.py [--epochs N] [--output DIR]
    python benchmarks/fashion_mnist.py --epochs 28 --clip-grad 1.0 --finetune-size 96 --finetune-epochs 4 --tta
    python benchmarks/fashion_mnist.py --from-run runs/f64 --finetune-size 64 --finetune-epochs 14 \
        --finetune-lr 8e-4 --finetune-warmup-epochs 1 --finetune-ema 0.999 --clip-grad 1.0 --tta
    python benchmarks/fashion_mnist.py --report last --tta --output runs/f96   # the recipe (96 px, EMA): 94.36%

Runs `vitkit train --recipe fashion_mnist_mobilevit_xxs` (the official 10,000-image test split is the
validation split), then `vitkit eval` on the best checkpoint, and prints one JSON line with the figures. The
best epoch is chosen on that test split; ``--report last`` scores the last checkpoint instead, the end of a
schedule fixed before the run, so that no choice is made on the test images.

With ``--finetune-size S`` a second run starts from the first one's reported weights and trains
``--finetune-epochs`` more at S px with a small learning rate (no warm-up unless
``--finetune-warmup-epochs``; ``--finetune-ema`` evaluates an average of the weights). At a larger S this
is fine-tuning at the test resolution (Touvron et al. 2019, "Fixing the train-test resolution
discrepancy"); at the first run's own size it is a warm restart of the cosine schedule (Loshchilov and
Hutter 2017, SGDR), which continues training for a fraction of a longer run's cost. ``--from-run DIR``
takes a finished first run instead of training one (its wall time is read from its metrics.csv). ``--tta``
also reports the top-1 with hflip test-time augmentation (``vitkit eval --tta hflip``). The CPU budget
printed is the sum of the epochs' recorded seconds, evaluation included.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import torch

import vitkit

RECIPE = "fashion_mnist_mobilevit_xxs"


def epochs_of(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def stage_figures(run: Path, data: str, tta: bool, report: str = "best") -> dict:
    history = epochs_of(run)
    best = max(history, key=lambda h: h["val_top1"])
    checkpoint = run / f"{report}.json"  # best: the epoch chosen on the validation split; last: no choice made
    evaluation = vitkit.evaluate(checkpoint, data)
    figures = {
        "run": str(run),
        "reported_checkpoint": report,
        "epochs": len(history),
        "best_epoch": int(best["epoch"]),
        "test_top1": round(evaluation.top1, 4),
        "test_top5": round(evaluation.top5, 4),
        "epoch_seconds": round(sum(h["seconds"] for h in history), 1),
        # the recipe's validation split is the test split, so the best epoch is chosen on it: the last epoch's
        # figure is the one free of that choice
        "last_epoch_test_top1": round(history[-1]["val_top1"], 4),
        "test_top1_by_epoch": [round(h["val_top1"], 4) for h in history],
    }
    if tta:
        figures["test_top1_hflip_tta"] = round(vitkit.evaluate(checkpoint, data, tta="hflip").top1, 4)
    return figures


def train(output: Path, data: str, settings: dict) -> str:
    """Train the recipe with ``settings`` overriding it; returns the equivalent ``vitkit train`` command."""
    vitkit.train(recipe=RECIPE, output=str(output), data=data, **settings)
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
    return f"vitkit train --recipe {RECIPE} --output {output} {options}".rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--clip-grad", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--image-size", type=int, default=None, help="the first stage's side; default: the recipe's")
    parser.add_argument("--ema", type=float, help="evaluate an EMA of the first stage's weights (e.g. 0.999)")
    parser.add_argument("--output", default="runs/bench-fashion-mnist")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--from-run", help="a finished first run to start from instead of training one")
    parser.add_argument("--finetune-size", type=int, help="then fine-tune the best weights at this side")
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--finetune-lr", type=float, default=2e-4)
    parser.add_argument("--finetune-warmup-epochs", type=float, default=0.0)
    parser.add_argument("--finetune-ema", type=float, help="evaluate an EMA of the second stage's weights (e.g. 0.999)")
    parser.add_argument("--tta", action="store_true", help="also report the top-1 with hflip test-time augmentation")
    parser.add_argument(
        "--report",
        choices=["best", "last"],
        default="best",
        help="the checkpoint scored: best (the epoch with the highest validation top-1, here the test split) or "
        "last (the schedule's end, free of that choice)",
    )
    args = parser.parse_args()

    first = Path(args.from_run or args.output)
    started = time.perf_counter()
    if args.from_run:  # trained before: its own config.yaml says how
        commands = [f"(a finished run: {first}/config.yaml)"]
    else:
        chosen = {
            "epochs": args.epochs,
            "clip_grad": args.clip_grad,
            "image_size": args.image_size,
            "ema_decay": args.ema,
        }
        settings = {k: v for k, v in chosen.items() if v is not None}
        commands = [train(first, args.data, settings)]
    stages = [stage_figures(first, args.data, args.tta, args.report)]

    if args.finetune_size:
        second = first.with_name(f"{first.name}-{args.finetune_size}px-{args.finetune_epochs}ep")
        settings = {
            "pretrained": str(first / f"{args.report}.safetensors"),
            "image_size": args.finetune_size,
            "epochs": args.finetune_epochs,
            "lr": args.finetune_lr,
            "warmup_epochs": args.finetune_warmup_epochs,
        }
        if args.finetune_ema:
            settings["ema_decay"] = args.finetune_ema
        if args.clip_grad:
            settings["clip_grad"] = args.clip_grad
        commands.append(train(second, args.data, settings))
        stages.append(stage_figures(second, args.data, args.tta, args.report))
    print(
        json.dumps(
            {
                "benchmark": RECIPE,
                "commands": commands,
                "stages": stages,
                "test_top1": stages[-1]["test_top1"],
                "cpu_budget_seconds": round(sum(s["epoch_seconds"] for s in stages), 1),
                "wall_seconds_this_call": round(time.perf_counter() - started, 1),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                f"torch {torch.__version__}, {torch.get_num_threads()} threads",
                "date": time.strftime("%Y-%m-%d"),
            }
        )
    )


if __name__ == "__main__":
    main()
