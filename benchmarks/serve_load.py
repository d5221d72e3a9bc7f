"""`vitkit serve` under load on the loopback interface, beside LitServe serving the same model, and beside the
model's offline throughput (no HTTP, no decoding), in one run.

    PYTHONPATH=. python benchmarks/serve_load.py [--digits runs/demo] [--backends torch,onnx,tflite]
                                                 [--concurrency 1,8,32] [--requests 240] [--threads 2]

Needs the serve and export extras, aiohttp (the load client) and LitServe (`pip install litserve aiohttp`).
Two models: the digits model of `make demo` (MobileViT-XXS at 64 px; trained here when --digits is not given)
and MobileViT-XXS at 256 px (random weights: speed does not depend on them). Each is exported to ONNX and
TFLite (float32) with `vitkit export`, then for each backend:

- vitkit: `vitkit serve SOURCE --backend B` in its own process, requests as raw image bodies to /v1/classify;
- LitServe: a LitAPI that runs the same `ServedModel` (the same runtime, threads and preprocessing function)
  with LitServe's batching (same max batch and batch timeout), requests as base64 JSON (LitServe's way of
  taking an image: its request decoding reads JSON or forms);
- offline: the same `ServedModel.run` called in a loop at batch 1 and at the max batch, and decoding alone.

Each load level sends a fixed number of requests from `concurrency` clients that each wait for their answer
before sending the next (a closed loop), and stops by itself. The photo is a 500x375 JPEG for the 256 px model
(a typical web photo) and a digit PNG for the digits model. Prints a table and writes serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
MAX_BATCH = 16
BATCH_DELAY_MS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vitkit_cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "vitkit", *args], check=True, stdout=subprocess.DEVNULL)


def photo_jpeg(path: Path, seed: int, size=(500, 375)) -> Path:
    """A photo-like JPEG: smooth gradients and blobs plus sensor noise (compresses like a photo)."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(6 * x + c) * np.cos(4 * y - c) for c in rng.uniform(0, 6, 3)], axis=-1)
    image = ((base + 1) * 110 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
    Image.fromarray(image).filter(ImageFilter.GaussianBlur(1)).save(path, quality=90)
    return path


def make_xxs_256(work: Path) -> Path:
    """MobileViT-XXS at 256 px with random weights, 5 classes, and a small folder of its classes (what export
    verifies the files on)."""
    import torch

    import vitkit
    from vitkit.checkpoint import save_checkpoint

    data = work / "photos"
    classes = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    for i, name in enumerate(classes):
        (data / name).mkdir(parents=True, exist_ok=True)
        for j in range(8):
            photo_jpeg(data / name / f"{j}.jpg", seed=10 * i + j)
    torch.manual_seed(0)
    model = vitkit.create_model("mobilevit_xxs", num_classes=5)
    meta = {
        "model": "mobilevit_xxs",
        "model_args": {},
        "class_names": classes,
        "preprocess": model.preprocess.to_dict(),
        "data": {"spec": str(data), "val_fraction": 0.5, "split_seed": 0},
    }
    run = work / "xxs256"
    save_checkpoint(run, "best", model.state_dict(), meta)
    return run


def export_all(run: Path, backends: list[str]) -> None:
    for fmt in ("onnx", "tflite"):
        if fmt in backends and not list(run.glob(f"*.{fmt}")):
            print(f"  exporting {run.name} to {fmt}", flush=True)
            vitkit_cli("export", str(run), "--format", fmt)


async def closed_loop(url: str, payload: bytes, headers: dict, concurrency: int, total: int) -> dict:
    import aiohttp

    latencies, statuses = [], []
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def client():
            for _ in counter:
                t0 = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    statuses.append(r.status)
                latencies.append(time.perf_counter() - t0)

        for _ in range(min(4, total)):  # warm the connections and the server
            async with session.post(url, data=payload, headers=headers) as r:
                await r.read()
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {
        "requests_per_s": round(total / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "errors": int(sum(s != 200 for s in statuses)),
    }


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in (200, 405):
                    return
        except Exception as e:  # noqa: BLE001
            if getattr(e, "code", None) == 405:  # LitServe's /predict answers GET with 405 once it is up
                return
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def run_server(kind: str, source: Path, backend: str, threads: int, photo: bytes, levels, total) -> list[dict]:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parent)}
    if kind == "vitkit":
        source_arg = str(source)
        cmd = [sys.executable, "-m", "vitkit", "serve", source_arg, "--backend", backend, "--port", str(port),
               "--max-batch", str(MAX_BATCH), "--max-batch-delay", str(BATCH_DELAY_MS), "--threads", str(threads),
               "--max-in-flight", "256"]  # fmt: skip
        url, ready = f"http://127.0.0.1:{port}/v1/classify?top_k=5", f"http://127.0.0.1:{port}/v2/health/ready"
        payload, headers = photo, {"Content-Type": "image/jpeg"}
    else:
        cmd = [sys.executable, str(HERE / "litserve_app.py"), str(source), backend, str(port), str(threads),
               str(MAX_BATCH), str(BATCH_DELAY_MS / 1e3)]  # fmt: skip
        url = ready = f"http://127.0.0.1:{port}/predict"
        payload = json.dumps({"image": base64.b64encode(photo).decode()}).encode()
        headers = {"Content-Type": "application/json"}
    log = open(Path(tempfile.gettempdir()) / f"serve_load_{kind}.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(ready, proc)
        rows = []
        for c in levels:
            result = asyncio.run(closed_loop(url, payload, headers, c, total))
            rows.append({"server": kind, "backend": backend, "concurrency": c, **result})
            print(f"    {kind:<8} {backend:<7} c={c:<3} {result}", flush=True)
        return rows
    finally:  # the whole process group: LitServe's inference workers outlive their parent otherwise
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def offline(source: Path, backend: str, threads: int, photo: bytes) -> dict:
    """The model alone: ServedModel.run at batch 1 and MAX_BATCH, and eval_image (decode + preprocess) alone."""
    import torch

    from vitkit.data.images import eval_image
    from vitkit.serve.backends import open_model

    torch.set_num_threads(threads)
    model = open_model(source, backend, "cpu", threads, MAX_BATCH, log=lambda s: None)
    size = model.preprocess.input_size
    out = {}
    for batch in (1, MAX_BATCH):
        x = torch.zeros(batch, 3, size, size, dtype=torch.uint8)
        for _ in range(3):
            model.run(x)
        calls, start = 0, time.perf_counter()
        while calls < 5 or time.perf_counter() - start < 2:
            model.run(x)
            calls += 1
        seconds = (time.perf_counter() - start) / calls
        out[f"batch{batch}_ms"] = round(seconds * 1e3, 2)
        out[f"batch{batch}_img_per_s"] = round(batch / seconds, 1)
    calls, start = 0, time.perf_counter()
    while calls < 20 or time.perf_counter() - start < 1:
        eval_image(photo, model.preprocess)
        calls += 1
    out["decode_ms"] = round((time.perf_counter() - start) / calls * 1e3, 2)
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| model | backend | server | concurrency | req/s | p50 ms | p99 ms | errors | vs LitServe req/s | served / offline |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lit = next(
            (x for x in results if x["server"] == "litserve" and x["model"] == r["model"] and x["backend"] == r["backend"]
             and x["concurrency"] == r["concurrency"]), None,
        )  # fmt: skip
        ratio = f"{r['requests_per_s'] / lit['requests_per_s']:.2f}x" if lit and r["server"] == "vitkit" else ""
        share = f"{r['requests_per_s'] / r['offline_img_per_s']:.0%}"
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['server']} | {r['concurrency']} | {r['requests_per_s']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {ratio} | {share} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", help="a trained digits run folder (default: train one with the digits recipe)")
    parser.add_argument("--backends", default="torch,onnx,tflite")
    parser.add_argument("--models", default="digits,xxs256")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=240, help="requests per load level")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip-litserve", action="store_true")
    parser.add_argument("--work", help="folder for the models and exports (default: a temporary one)")
    parser.add_argument("--output", default=str(HERE / "serve_load.json"))
    args = parser.parse_args()
    backends = args.backends.split(",")
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(args.work or tempfile.mkdtemp(prefix="vitkit-serve-load-"))
    work.mkdir(parents=True, exist_ok=True)

    sources = {}
    if "digits" in args.models:
        digits = Path(args.digits) if args.digits else work / "digits"
        if not (digits / "best.json").exists():
            print("training the digits recipe (about a minute)", flush=True)
            vitkit_cli("train", "--recipe", "digits_quickstart", "--output", str(digits))
        sources["digits"] = digits
    if "xxs256" in args.models:
        sources["mobilevit_xxs 256 px"] = (
            work / "xxs256" if (work / "xxs256" / "best.json").exists() else make_xxs_256(work)
        )

    from vitkit.data.sources import list_data

    digit_png = None
    if "digits" in sources:
        from sklearn.datasets import load_digits
        from PIL import Image

        digit = (load_digits().images[0] * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(digit).convert("RGB").save(work / "digit.png")
        digit_png = (work / "digit.png").read_bytes()
    photo = photo_jpeg(work / "photo.jpg", seed=99).read_bytes()
    del list_data

    results, offline_rows = [], {}
    for model_name, source in sources.items():
        payload = digit_png if model_name == "digits" else photo
        print(f"{model_name}: {source}", flush=True)
        export_all(source, backends)
        for backend in backends:
            off = offline(source, backend, args.threads, payload)
            offline_rows[f"{model_name}/{backend}"] = off
            print(f"    offline  {backend:<7} {off}", flush=True)
            for kind in ("vitkit",) + (() if args.skip_litserve else ("litserve",)):
                for row in run_server(kind, source, backend, args.threads, payload, levels, args.requests):
                    row.update(model=model_name, offline_img_per_s=off[f"batch{MAX_BATCH}_img_per_s"])
                    results.append(row)
    print()
    print(table(results))
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
        },
        "max_batch": MAX_BATCH,
        "batch_delay_ms": BATCH_DELAY_MS,
        "requests_per_level": args.requests,
        "offline": offline_rows,
        "rows": results,
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {args.output}")


if __name__ == "__main__":
    main()
