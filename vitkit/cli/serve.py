"""``vitkit serve``."""

from __future__ import annotations

import argparse
import os

SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart", "prometheus_client")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: a JSON API, the KServe v2 protocol, metrics and a web page",
        description="Serve a run folder, a checkpoint, or an exported .onnx / .tflite file (with its .json "
        "sidecar) over HTTP. Routes: POST /v1/classify, the KServe v2 routes under /v2, GET /metrics, "
        "GET /docs, and a web page at /. SIGHUP or POST /admin/reload loads the source again.",
    )
    p.add_argument("source", help="run folder, checkpoint .json / .safetensors, or exported .onnx / .tflite file")
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnx", "tflite"),
        help="auto: on a GPU PyTorch; on a CPU the fastest of PyTorch and the run's verified float exports "
        "(timed at start); onnx/tflite: the run's verified export of that format",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (PyTorch backend)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=16, help="most images per model call")
    p.add_argument(
        "--max-batch-delay",
        type=float,
        default=2.0,
        metavar="MS",
        help="how long a batch may wait for requests already being decoded (never for requests not yet come)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=64,
        help="requests being decoded, queued or run at once; past it a request gets 503 with Retry-After",
    )
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="a request's deadline (then 504)")
    p.add_argument("--max-upload-bytes", type=int, default=20 * 2**20, help="largest request body (then 413)")
    p.add_argument("--max-pixels", type=int, default=50_000_000, help="largest image, read from its header (then 413)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("VITKIT_API_KEY"),
        help="required as 'Authorization: Bearer KEY' on the classify, model and reload routes "
        "(default: $VITKIT_API_KEY; none: open)",
    )
    p.add_argument("--threads", type=int, help="CPU threads for the model and for decoding (default: all cores)")
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from vitkit.export.deploy import require

    require(*SERVE_MODULES)
    from vitkit.serve.app import ServeOptions, serve

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, not {args.port}.")
    options = ServeOptions(
        backend=args.backend,
        device=args.device,
        max_batch=args.max_batch,
        max_batch_delay_ms=args.max_batch_delay,
        max_in_flight=args.max_in_flight,
        timeout_s=args.timeout,
        max_upload_bytes=args.max_upload_bytes,
        max_pixels=args.max_pixels,
        api_key=args.api_key,
        threads=args.threads,
    )
    serve(args.source, args.host, args.port, options)
    return 0
