"""PNG plots of a run (loss, top-1, top-5 per epoch, as the keras.io examples plot them) and of a confusion matrix."""

from __future__ import annotations

from pathlib import Path

from vitkit.utils import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict], folder: Path) -> list[Path]:
    """loss.png, top1.png and top5.png: train and validation curves per epoch."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    written = []
    for name, train_key, val_key, ylabel in (
        ("loss", "train_loss", "val_loss", "loss"),
        ("top1", "train_top1", "val_top1", "top-1 accuracy"),
        ("top5", None, "val_top5", "top-5 accuracy"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        if train_key:
            ax.plot(epochs, [h[train_key] for h in history], marker="o", label="train")
        ax.plot(epochs, [h[val_key] for h in history], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        with atomic_path(folder / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(folder / f"{name}.png")
    return written


def plot_confusion(confusion, class_names: list[str], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    n = len(class_names)
    size = min(3 + 0.45 * n, 20)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    matrix = confusion.cpu().numpy()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if n <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > threshold else "black")  # fmt: skip
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
