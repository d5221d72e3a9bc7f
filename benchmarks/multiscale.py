"""Multi-scale training (``--multiscale``) against one scale: steps per epoch, time and accuracy.

    PYTHONPATH=. python benchmarks/multiscale.py [--recipe fashion_mnist_mobilevit_xxs] [--epochs 4]

Trains the recipe twice from the same seed, once as it is and once with ``multiscale: true`` (ml-cvnets'
variable batch sampler: every batch at one of the sides 0.625-1.25x the input size, the batch size scaled to
keep the pixels per batch), evaluates both single-scale on the recipe's validation split (Fashion-MNIST's
official test set), and prints each epoch's steps, seconds and validation top-1, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

import vitkit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="fashion_mnist_mobilevit_xxs")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--output", default="runs/bench-multiscale")
    args = parser.parse_args()

    runs = {}
    for multiscale in (False, True):
        name = "multiscale" if multiscale else "single"
        started = time.perf_counter()
        result = vitkit.train(
            recipe=args.recipe, epochs=args.epochs, multiscale=multiscale, output=f"{args.output}/{name}",
            overwrite=True,
        )  # fmt: skip
        runs[name] = {
            "wall_seconds": round(time.perf_counter() - started, 1),
            "steps": [h["steps"] for h in result.history],
            "epoch_seconds": [h["seconds"] for h in result.history],
            "val_top1": [round(h["val_top1"], 4) for h in result.history],
            "best_val_top1": round(result.best_top1, 4),
        }
    print("\n| run | steps per epoch | seconds per epoch | val top-1 per epoch |\n| --- | --- | --- | --- |")
    for name, run in runs.items():
        print(f"| {name} | {run['steps']} | {run['epoch_seconds']} | {[f'{v:.2%}' for v in run['val_top1']]} |")
    print(
        json.dumps(
            {
                "benchmark": "multiscale",
                "command": f"python benchmarks/multiscale.py --recipe {args.recipe} --epochs {args.epochs}",
                **runs,
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                "date": time.strftime("%Y-%m-%d"),
            }
        )
    )


if __name__ == "__main__":
    main()
