"""Helpers for the server tests: a checkpoint to serve, real photos, and a live server on a loopback port."""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import torch

import vitkit
from vitkit.checkpoint import save_checkpoint
from vitkit.preprocess import Preprocess

CLASSES = ["bricks", "flower", "sky", "temple", "water"]  # sorted, as a folder of class folders lists them
PREPROCESS = Preprocess(48, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=0.875, interpolation="bicubic")


def write_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A small ViT with random weights large enough that its top-5 differs from image to image."""
    from tests.conftest import randomize_

    torch.manual_seed(seed)
    model = randomize_(vitkit.create_model("vit_cifar", num_classes=len(CLASSES), image_size=48), 0.2)
    meta = {
        "model": "vit_cifar",
        "model_args": {"image_size": 48},
        "class_names": CLASSES,
        "preprocess": PREPROCESS.to_dict(),
        "data": {"spec": "photos", "val_fraction": 0.2, "split_seed": 0},
    }
    save_checkpoint(folder, "best", model.state_dict(), meta)
    return folder


def sample_photos(folder: Path) -> list[Path]:
    """scikit-learn's two sample photos (JPEG), and variants of them a phone or a browser sends: a PNG with
    transparency, a grayscale one, an EXIF-rotated JPEG, a WebP, and a 12-megapixel JPEG (draft-mode decoding)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images  # noqa: F401 (the files ship beside it)
    import sklearn.datasets

    folder.mkdir(parents=True, exist_ok=True)
    base = Path(sklearn.datasets.__file__).parent / "images"
    paths = []
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(base / name, folder / name)
        paths.append(folder / name)
    china = Image.open(base / "china.jpg").convert("RGB")
    flower = Image.open(base / "flower.jpg").convert("RGB")
    rgba = flower.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(flower.size))
    rgba.save(folder / "flower_alpha.png")
    china.convert("L").save(folder / "china_gray.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    china.transpose(Image.Transpose.ROTATE_90).save(folder / "china_rotated.jpg", exif=exif)
    flower.save(folder / "flower.webp", quality=90)
    china.resize((4240, 2832), Image.Resampling.BICUBIC).save(folder / "china_12mp.jpg", quality=90)
    paths += [
        folder / n for n in ("flower_alpha.png", "china_gray.png", "china_rotated.jpg", "flower.webp", "china_12mp.jpg")
    ]
    return paths


def encoded(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


class LiveServer:
    """The app on a real socket (a free loopback port), served by uvicorn in a thread."""

    def __init__(self, app):
        import uvicorn

        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> "LiveServer":
        import httpx

        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the server did not become ready in 60 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


def chromium() -> str | None:
    """Debian's chromium (what CI installs with apt-get); Playwright downloads no browser."""
    for path in (os.environ.get("VITKIT_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if path and Path(path).is_file():
            return path
    return None
