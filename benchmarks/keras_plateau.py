"""Why the keras.io MobileViT example sits near chance on validation for its first epochs, and the fix.

    python benchmarks/keras_plateau.py [--epochs 15] [--image-size 64] [--output /tmp/keras-plateau]

The example's log (and a public log of the same code) shows validation accuracy at 19% for epochs 2-8 while
training accuracy rises. tf_flowers cannot be downloaded here, so the stand-in is a folder of Fashion-MNIST
images with tf_flowers' shape: 5 classes (T-shirt, pullover, dress, coat, shirt: the most alike garments)
with tf_flowers' class counts (898, 799, 699, 641, 633: 3,670 images) and its 90/10 split (3,303 / 367),
so an epoch has the example's 52 steps of batch 64. The model and recipe are the example's
(`flowers_mobilevit_xxs_keras`) at a smaller image size, for time.

Each variant trains one epoch at a time (`--resume` extends the run; the schedule is constant, so this is the
uninterrupted run). After every epoch the last weights are scored twice on the validation split: as saved
(BatchNorm's running statistics, what the example's validation uses) and with the running statistics
recomputed over the training set for the current weights ("precise BN", Wu and Johnson 2021). If only the first
sits at chance, the weights are fine and the statistics lag behind them.

Prints one JSON line per variant and epoch, and draws benchmarks/keras_plateau.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitkit
from vitkit.checkpoint import load_model
from vitkit.data.sources import FASHION_SYSTEM_DIR, read_idx
from vitkit.inference import evaluate_model, prepare_for_inference
from vitkit.training import build_config
from vitkit.training.distributed import DistInfo
from vitkit.training.trainer import setup

CLASSES = {0: "tshirt", 2: "pullover", 3: "dress", 4: "coat", 6: "shirt"}  # Fashion-MNIST label -> folder
COUNTS = (898, 799, 699, 641, 633)  # tf_flowers: dandelion, tulips, sunflowers, roses, daisy
VARIANTS = {  # Keras' momentum m keeps m of the running statistics per batch; PyTorch's momentum is 1 - m
    "the example's recipe (Keras BatchNorm momentum 0.99)": {"model_args": {"bn_momentum": 0.01}},
    "BatchNorm momentum 0.9 (vitkit's recipe)": {"model_args": {"bn_momentum": 0.1}},
}


def build_standin(folder: Path) -> Path:
    """tf_flowers' shape from Fashion-MNIST's training images (the first of each class, in file order)."""
    if (folder / "done").is_file():
        return folder
    images = read_idx(FASHION_SYSTEM_DIR / "train-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_SYSTEM_DIR / "train-labels-idx1-ubyte.gz")
    for (label, name), count in zip(CLASSES.items(), COUNTS):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i, index in enumerate(np.flatnonzero(labels == label)[:count]):
            Image.fromarray(images[index]).save(folder / name / f"{i:04d}.png")
    (folder / "done").write_text("")
    return folder


@torch.no_grad()
def precise_bn_top1(run_dir: Path, train_images: torch.Tensor, train_tf, val, batch: int = 64) -> float:
    """Validation top-1 after recomputing every BatchNorm's running statistics as the plain average over the
    training set's (augmented) batches, with the current weights."""
    model, _ = load_model(run_dir / "last.safetensors")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average
    model.train()
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(train_images), batch):
        model(train_tf(train_images[start : start + batch], generator))
    model.eval()
    return evaluate_model(prepare_for_inference(model), val, torch.device("cpu"), 128).top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--output", default="/tmp/keras-plateau")
    parser.add_argument("--plot", default=str(Path(__file__).with_name("keras_plateau.png")))
    args = parser.parse_args()
    root = Path(args.output)
    data = build_standin(root / "standin")
    results = {}
    for name, overrides in VARIANTS.items():
        run_dir = root / f"run-{len(results)}"
        common = dict(data=str(data), image_size=args.image_size, output=str(run_dir), **overrides)
        rows = []
        for epoch in range(1, args.epochs + 1):
            started = time.perf_counter()
            if epoch == 1:
                result = vitkit.train(recipe="flowers_mobilevit_xxs_keras", epochs=1, overwrite=True, **common)
                # the run's own data split and training transform, for the precise-BN pass
                scratch = {**common, "epochs": 1, "output": str(root / "scratch")}
                run = setup(build_config("flowers_mobilevit_xxs_keras", scratch), DistInfo(), torch.device("cpu"),
                            lambda *a, **k: None)  # fmt: skip
            else:
                result = vitkit.train(resume=str(run_dir), epochs=epoch)
            record = result.history[-1]
            row = {
                "variant": name,
                "epoch": epoch,
                "train_top1": record["train_top1"],
                "val_top1": record["val_top1"],
                "val_top1_precise_bn": round(precise_bn_top1(run_dir, run.data.train.images, run.train_tf, run.data.val), 5),
                "seconds": round(time.perf_counter() - started, 1),
            }  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
        results[name] = rows
    (root / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, args.plot, args.image_size)


def plot(results: dict, path: str, size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (name, rows), color in zip(results.items(), ("tab:red", "tab:blue")):
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [100 * r["val_top1"] for r in rows], "-o", color=color, label=f"{name}: validation")
        ax.plot(epochs, [100 * r["val_top1_precise_bn"] for r in rows], ":", color=color,
                label=f"{name}: validation, BatchNorm statistics recomputed")  # fmt: skip
        ax.plot(epochs, [100 * r["train_top1"] for r in rows], "--", color=color, alpha=0.5, label=f"{name}: training")
    ax.axhline(100 * max(COUNTS) / sum(COUNTS), color="gray", lw=0.8)
    ax.text(1, 100 * max(COUNTS) / sum(COUNTS) + 1, "always the largest class", color="gray", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%)")
    ax.set_ylim(0, 115)
    ax.set_title(f"keras.io MobileViT-XXS recipe, tf_flowers-shaped Fashion-MNIST stand-in, {size} px")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
