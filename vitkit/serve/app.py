"""The HTTP application: vitkit's own route, the KServe v2 subset, metrics, the web page and reload.

One bounded limit covers a request's whole stay (decoding, queue, model): past ``max_in_flight`` a request is
answered 503 with Retry-After at once instead of queueing without end, and past ``timeout_s`` it gets 504 and
its images are dropped from the queue. Errors share one shape, ``{"error": "one sentence"}``, and never carry
a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from vitkit.data.images import ImageTooLarge, UnreadableImage, read_image
from vitkit.serve import kserve
from vitkit.serve.backends import ServedModel, open_model
from vitkit.serve.batching import Batcher
from vitkit.serve.metrics import Metrics

IMAGE_TYPES = ("image/", "application/octet-stream")


@dataclass(frozen=True)
class ServeOptions:
    """How a server runs; every value is checked here, before a model is loaded."""

    backend: str = "auto"
    device: str = "auto"
    max_batch: int = 16
    max_batch_delay_ms: float = 2.0
    max_in_flight: int = 64
    timeout_s: float = 30.0
    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 50_000_000  # a 12 MP phone photo is 12,000,000
    api_key: str | None = None
    threads: int | None = None  # intra-op threads of the model and decoding threads; default: the cores

    def __post_init__(self):
        for name, low in (("max_batch", 1), ("max_in_flight", 1), ("max_upload_bytes", 1), ("max_pixels", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number of at least {low}, not {value!r}.")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be 1 or more, not {self.threads!r}.")
        if not self.max_batch_delay_ms >= 0:
            raise ValueError(f"max_batch_delay_ms must be 0 or more, not {self.max_batch_delay_ms!r}.")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be above 0, not {self.timeout_s!r}.")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("An API key must be at least 8 characters long.")

    @property
    def cores(self) -> int:
        return self.threads or os.cpu_count() or 1


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Server:
    """The state behind the routes: the model being served, the batcher, and the in-flight count."""

    def __init__(self, model: ServedModel, options: ServeOptions, source: str | Path | None = None, log=print):
        self.options, self.log = options, log
        self.source = source or model.source
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(options.cores, thread_name_prefix="vitkit-decode")  # Pillow only
        self.model = model
        self.batcher = Batcher(options.max_batch, options.max_batch_delay_ms / 1e3, self.metrics)
        self.ready = False
        self.in_flight = 0
        self.reloading: asyncio.Lock | None = None

    async def on_batcher(self, fn: Callable[[], object]):
        """Run PyTorch work (loading, warm-up) on the batcher's thread, the one thread that runs PyTorch."""
        return await asyncio.wrap_future(self.batcher.call(fn))

    async def start(self) -> None:
        """Warm up every batch size, then answer ready."""
        await self.on_batcher(lambda: self.model.warm_up(self.options.max_batch))
        self.ready = True
        self.log(f"ready: {self.model.describe()}")

    async def reload(self, source: str | Path | None = None) -> ServedModel:
        """Load ``source`` (default: the one being served, read again), warm it, and swap it in at once; requests
        already admitted finish on the model they started with."""
        if self.reloading is None:
            self.reloading = asyncio.Lock()
        async with self.reloading:
            source = source or self.source
            o = self.options

            def load() -> ServedModel:
                model = open_model(source, o.backend, o.device, o.threads, o.max_batch, self.log)
                model.warm_up(o.max_batch)
                return model

            model = await self.on_batcher(load)
            self.model, self.source = model, source
            self.log(f"reloaded: {model.describe()}")
            return model

    def check_key(self, request: Request) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(
                401, "A valid API key is needed: send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'."
            )

    async def guarded(self, work: Callable[[], Awaitable[Response]]) -> Response:
        """Admission (503 past the in-flight limit or before warm-up), the deadline (504) and errors."""
        if not self.ready:
            return error_response(503, "The model is still warming up; try again in a moment.", {"Retry-After": "1"})
        if self.in_flight >= self.options.max_in_flight:
            return error_response(
                503, f"The server is at its limit of {self.options.max_in_flight} requests in flight; retry shortly.",
                {"Retry-After": "1"},
            )  # fmt: skip
        self.in_flight += 1
        self.metrics.in_flight.inc()
        try:
            return await asyncio.wait_for(work(), self.options.timeout_s)
        except asyncio.TimeoutError:
            return error_response(504, f"The request took longer than its {self.options.timeout_s:g} s deadline.")
        except ApiError as e:
            return error_response(e.status, e.message, e.headers)
        except Exception as e:  # a bug or a failing model: logged here, never shown to the client
            self.log(f"internal error: {type(e).__name__}: {e}")
            return error_response(500, "Internal error; the server logged it.")
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.dec()

    async def classify(self, images: list[tuple[str, bytes]]) -> tuple[ServedModel, np.ndarray, dict[str, float]]:
        """Encoded images -> (the model that ran, probabilities [N, classes], stage times in seconds)."""
        model, batcher = self.model, self.batcher  # a reload swapping the model mid-request does not change it
        loop = asyncio.get_running_loop()
        start = time.perf_counter()

        async def decode(name: str, data: bytes):
            batcher.decode_started()
            try:
                t0 = time.perf_counter()
                image = await loop.run_in_executor(
                    self.executor, read_image, data, model.preprocess.resize_size, self.options.max_pixels
                )
                self.metrics.decode.observe(time.perf_counter() - t0)
                return image
            except UnreadableImage as e:
                raise ApiError(400, f"{name} is {e}; send a JPEG, PNG, WebP, BMP, GIF or TIFF file.") from None
            except ImageTooLarge as e:
                raise ApiError(413, f"{name} is {e}; send a smaller image.") from None
            finally:
                batcher.decode_ended()

        decoded_images = await asyncio.gather(*(decode(name, data) for name, data in images))
        decoded = time.perf_counter()
        results = await asyncio.gather(*(batcher.submit(model, image) for image in decoded_images))
        timing = {
            "decode": decoded - start,
            "queue": max(r.queue_s for r in results),
            "inference": max(r.inference_s for r in results),
            "total": time.perf_counter() - start,
        }
        return model, np.stack([r.probabilities for r in results]), timing


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes: from Content-Length when sent,
    else while it streams in."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise ApiError(413, f"The upload is {int(length):,} bytes, more than the {limit:,} allowed.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"The upload is more than the {limit:,} bytes allowed.")
        chunks.append(chunk)
    return b"".join(chunks)


async def multipart_files(request: Request, body: bytes, limit: int) -> list[tuple[str, bytes]]:
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1000, max_part_size=limit).parse()
    except MultiPartException as e:
        raise ApiError(422, f"The multipart body could not be read ({e.message}).") from None
    files = []
    for part in form.getlist("file"):
        if isinstance(part, str):
            raise ApiError(422, "Each 'file' part must be a file upload, not a text field.")
        name = part.filename or "file"
        content_type = part.content_type or "application/octet-stream"
        if not content_type.startswith(IMAGE_TYPES):
            raise ApiError(415, f"{name} is {content_type}, not an image.")
        files.append((name, await part.read()))
    if not files:
        raise ApiError(422, "The multipart body holds no part named 'file'; send each image as a 'file' part.")
    return files


def timing_headers(model: ServedModel, timing: dict[str, float]) -> dict[str, str]:
    return {
        "X-Model-Name": model.name,
        "X-Model-Version": model.version,
        "X-Backend": model.backend,
        "Server-Timing": ", ".join(f"{stage};dur={seconds * 1e3:.2f}" for stage, seconds in timing.items()),
    }


def top_k(probabilities: np.ndarray, names: list[str], k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[: min(k, len(names))]
    return [{"label": names[i], "score": round(float(probabilities[i]), 6)} for i in order]


def create_app(
    model: ServedModel, options: ServeOptions | None = None, source=None, log=print, batcher_thread: bool = True
) -> FastAPI:
    """The ASGI app serving ``model``; the model is warmed up (every batch size) before it answers ready.

    ``batcher_thread``: run the batcher in a thread the app starts (any ASGI server can then run the app);
    ``serve`` passes False and runs ``app.state.server.batcher.run()`` in the main thread itself.
    """
    from vitkit import __version__

    options = options or ServeOptions()
    server = Server(model, options, source, log)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.loop = asyncio.get_running_loop()
        thread = server.batcher.start_thread() if batcher_thread else None
        warm = asyncio.create_task(server.start())
        yield
        warm.cancel()
        server.batcher.stop()
        if thread is not None:
            await asyncio.to_thread(thread.join)
        server.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="vitkit serve",
        version=__version__,
        description="Image classification with a vitkit model: vitkit's JSON API and the KServe v2 protocol.",
        lifespan=lifespan,
    )
    app.state.server = server

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error_response(e.status, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'][1:]) or 'body'}: {err['msg']}" for err in e.errors()
        )
        return error_response(422, f"The request is malformed ({problems}).")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        message = "No such route; see /docs." if e.status_code == 404 else str(e.detail)
        return error_response(e.status_code, message, getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):
        log(f"internal error on {request.url.path}: {type(e).__name__}: {e}")
        return error_response(500, "Internal error; the server logged it.")

    @app.middleware("http")
    async def _count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        server.metrics.request(getattr(route, "path", "other"), response.status_code, time.perf_counter() - start)
        return response

    def served(name: str) -> ServedModel:
        if name != server.model.name:
            raise ApiError(404, f"Unknown model '{name}'; this server serves '{server.model.name}'.")
        return server.model

    # vitkit's own API ---------------------------------------------------------------------------------------

    @app.post("/v1/classify", summary="Classify one image (raw body) or several (multipart 'file' parts)")
    async def classify(request: Request, top_k_: int = Query(5, alias="top_k", ge=1, le=1000)):
        server.check_key(request)

        async def work():
            body = await read_body(request, options.max_upload_bytes)
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                files = await multipart_files(request, body, options.max_upload_bytes)
            elif content_type.startswith(IMAGE_TYPES):
                if not body:
                    raise ApiError(400, "The body is empty; send the image's bytes.")
                files = [("The upload", body)]
            else:
                raise ApiError(
                    415,
                    f"Content type '{content_type or 'none'}' is not an image; send the image with Content-Type "
                    "image/jpeg (png, webp, ...) or as multipart/form-data 'file' parts.",
                )
            model, probabilities, timing = await server.classify(files)
            answers = [top_k(p, model.class_names, top_k_) for p in probabilities]
            content = answers if content_type.startswith("multipart/form-data") else answers[0]
            return JSONResponse(content, headers=timing_headers(model, timing))

        return await server.guarded(work)

    @app.get("/v1/model", summary="The model being served")
    async def model_info(request: Request):
        m = server.model
        return {
            "name": m.name,
            "version": m.version,
            "backend": m.backend,
            "classes": m.class_names,
            "preprocessing": m.preprocess.to_dict(),
            "ready": server.ready,
            "key_required": options.api_key is not None,
        }

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files("vitkit.serve").joinpath("static/index.html").read_text())

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(server.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/admin/reload", summary="Load the model again (or another source), warm it and swap it in")
    async def reload(request: Request):
        if options.api_key is None:
            raise ApiError(403, "Reloading needs the server to be started with an API key (--api-key).")
        server.check_key(request)
        body = await read_body(request, 1 << 16)
        source = None
        if body:
            import json

            try:
                source = json.loads(body).get("source")
            except (json.JSONDecodeError, AttributeError):
                raise ApiError(422, 'The body must be JSON like {"source": "runs/demo"}, or empty.') from None
        try:
            model = await server.reload(source)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise ApiError(422, f"Reload failed, still serving the previous model: {e}") from None
        return {"name": model.name, "version": model.version, "backend": model.backend, "source": str(server.source)}

    # KServe v2 / Open Inference Protocol ---------------------------------------------------------------------

    @app.get("/v2", summary="Server metadata (KServe v2)")
    async def v2():
        return {"name": "vitkit", "version": __version__, "extensions": ["binary_tensor_data", "classification"]}

    @app.get("/v2/health/live", summary="Liveness (KServe v2)")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", summary="Readiness: 200 once every batch size is warmed up (KServe v2)")
    async def ready():
        if not server.ready:
            return error_response(503, "The model is still warming up.", {"Retry-After": "1"})
        return {"ready": True}

    @app.get("/v2/models/{name}", summary="Model metadata (KServe v2)")
    async def model_metadata(name: str, request: Request):
        server.check_key(request)
        m = served(name)
        platform = {"torch": "pytorch", "onnx": "onnxruntime_onnx", "tflite": "tflite"}
        return {
            "name": m.name,
            "versions": [m.version],
            "platform": platform.get(m.backend.split(":")[0].split(" ")[0], m.backend),
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": kserve.OUTPUT, "datatype": "FP32", "shape": [-1, len(m.class_names)]}],
        }

    @app.get("/v2/models/{name}/ready", summary="Model readiness (KServe v2)")
    async def model_ready(name: str):
        served(name)
        if not server.ready:
            return error_response(503, "The model is still warming up.", {"Retry-After": "1"})
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", summary="Classify encoded images sent as a BYTES tensor (KServe v2)")
    async def infer(name: str, request: Request):
        server.check_key(request)
        served(name)

        async def work():
            body = await read_body(request, options.max_upload_bytes)
            try:
                payload, images = kserve.parse_infer(body, request.headers.get(kserve.HEADER_LENGTH))
                kserve.check_outputs(payload, len(server.model.class_names))
            except kserve.Malformed as e:
                raise ApiError(422, str(e)) from None
            files = [(f"Image {i}", data) for i, data in enumerate(images)]
            model, probabilities, timing = await server.classify(files)
            content, headers, media_type = kserve.infer_response(
                payload, model.name, model.version, model.class_names, probabilities
            )
            return Response(content, media_type=media_type, headers={**headers, **timing_headers(model, timing)})

        return await server.guarded(work)

    return app


def reload_logged(app: FastAPI) -> None:
    """SIGHUP: reload the source from the event loop's thread; a bad new file keeps the old model serving."""
    server: Server = app.state.server

    async def reload():
        try:
            await server.reload()
        except Exception as e:
            server.log(f"reload failed, still serving the previous model: {e}")

    app.state.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(reload()))


def serve(
    source: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    options: ServeOptions | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Load ``source`` (run folder, checkpoint, or exported file), then serve it until interrupted.

    The HTTP server runs in a thread; the main thread runs the batcher, so that every PyTorch call of the
    process comes from the main thread (see ``vitkit.serve.batching``)."""
    import signal
    import threading

    import torch
    import uvicorn

    options = options or ServeOptions()
    torch.set_num_threads(options.cores)  # one process: its intra-op threads never exceed the cores given
    model = open_model(source, options.backend, options.device, options.threads, options.max_batch, log)
    if not model.backend.startswith("torch"):
        # ONNX Runtime or LiteRT brings its own thread pool; PyTorch only preprocesses, on the batcher's thread
        torch.set_num_threads(1)
    app = create_app(model, options, source, log, batcher_thread=False)
    http = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    batcher = app.state.server.batcher

    def shut_down(*_):
        http.should_exit = True

    def run_http():
        try:
            http.run()
        finally:
            batcher.stop()  # the port was taken, or the server ended: end the main loop too

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda *_: reload_logged(app))
    thread = threading.Thread(target=run_http, name="vitkit-http", daemon=True)
    log(f"serving {model.describe()} on http://{host}:{port} (warming up {options.max_batch} batch sizes)")
    thread.start()
    batcher.run()
    thread.join(timeout=30)
    if not http.started:
        raise ValueError(f"Could not listen on {host}:{port} (is the port taken?); choose another with --port.")
