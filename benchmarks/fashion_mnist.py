"""Fashion-MNIST recipe: test top-1, epochs and wall time on this machine.

    python benchmarks/fashion_mnist.py [--epochs N] [--output DIR]

Runs `vitkit train --recipe fashion_mnist_mobilevit_xxs` (the official 10,000-image test split is the
validation split), then `vitkit eval` on the best checkpoint, and prints one JSON line with the figures.
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
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--output", default="runs/bench-fashion-mnist")
    parser.add_argument("--data", default="fashion-mnist")
    args = parser.parse_args()

    overrides = {"output": args.output, "data": args.data}
    if args.epochs:
        overrides["epochs"] = args.epochs
    started = time.perf_counter()
    result = vitkit.train(recipe="fashion_mnist_mobilevit_xxs", **overrides)
    train_seconds = time.perf_counter() - started
    evaluation = vitkit.evaluate(result.output, args.data)
    print(
        json.dumps(
            {
                "benchmark": "fashion_mnist_mobilevit_xxs",
                "command": f"vitkit train --recipe fashion_mnist_mobilevit_xxs --output {args.output}"
                + (f" --epochs {args.epochs}" if args.epochs else ""),
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
                "test_top1": round(evaluation.top1, 4),
                "test_top5": round(evaluation.top5, 4),
                "train_wall_seconds": round(train_seconds, 1),
                "mean_train_images_per_s": round(
                    sum(h["train_images_per_s"] for h in result.history) / len(result.history), 1
                ),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
                "date": time.strftime("%Y-%m-%d"),
            }
        )
    )


if __name__ == "__main__":
    main()
