"""``vitkit serve``: every route and error code in process, then on a real loopback socket under load."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import struct
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from tests.serving import CLASSES, LiveServer, encoded, sample_photos, write_checkpoint  # noqa: E402
from vitkit.serve import ServeOptions, create_app, open_model  # noqa: E402

KEY = "correct horse battery"
THIRD_PARTY_TFLITE = Path(__file__).parent / "data" / "third_party" / "keras_example_flowers_dynamic_range.tflite"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return sample_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def model(run):
    return open_model(run, backend="torch", device="cpu")


def variant(model, run=None, warm_up=None):
    """The same model with its ``run`` or ``warm_up`` replaced (a slow, blocked or broken model)."""
    copy = dataclasses.replace(model, run=run or model.run)
    if warm_up is not None:
        copy.warm_up = warm_up
    return copy


def ready_client(app) -> TestClient:
    client = TestClient(app)
    client.__enter__()
    deadline = time.monotonic() + 60
    while client.get("/v2/health/ready").status_code != 200:
        assert time.monotonic() < deadline, "the model never became ready"
        time.sleep(0.02)
    return client


@pytest.fixture(scope="module")
def client(model):
    client = ready_client(
        create_app(model, ServeOptions(max_batch=4, max_upload_bytes=4_000_000, max_pixels=20_000_000))
    )
    yield client
    client.__exit__(None, None, None)


def test_classify_answers_like_the_hugging_face_pipeline(client, photos):
    body = photos[0].read_bytes()
    r = client.post("/v1/classify?top_k=3", content=body, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [set(a) for a in answer] == [{"label", "score"}] * 3
    scores = [a["score"] for a in answer]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.000001
    assert {a["label"] for a in answer} <= set(CLASSES)
    assert r.headers["X-Model-Name"] == "vit_cifar" and len(r.headers["X-Model-Version"]) == 12
    stages = dict(part.strip().split(";dur=") for part in r.headers["Server-Timing"].split(","))
    assert set(stages) == {"decode", "queue", "inference", "total"} and all(float(v) >= 0 for v in stages.values())

    many = client.post("/v1/classify", files=[("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:2]])
    assert many.status_code == 200
    assert len(many.json()) == 2 and all(len(a) == 5 for a in many.json())
    assert many.json()[0] == client.post("/v1/classify", content=body, headers={"Content-Type": "image/jpeg"}).json()


def test_serve_and_predict_give_the_same_top_k(client, run, photos):
    """The server decodes uploads with the function vitkit predict uses for files (EXIF, alpha, grayscale,
    WebP, draft mode for a 12 MP JPEG included)."""
    from vitkit.inference import predict

    expected = predict(run, [str(p) for p in photos], top_k=5, device="cpu")
    assert not any(p.error for p in expected)
    for path, prediction in zip(photos, expected):
        served = client.post("/v1/classify", content=path.read_bytes(), headers={"Content-Type": "image/png"}).json()
        assert [a["label"] for a in served] == [c for c, _ in prediction.top], path.name
        assert np.allclose([a["score"] for a in served], [v for _, v in prediction.top], atol=1e-5), path.name


def test_bad_uploads_get_the_right_status_and_one_sentence(client, photos):
    def post(content, content_type="image/png", query=""):
        return client.post(f"/v1/classify{query}", content=content, headers={"Content-Type": content_type})

    cases = {
        400: [post(b"hello"), post(photos[0].read_bytes()[:2000], "image/jpeg"), post(b"")],
        413: [post(b"\0" * 4_000_001)],
        415: [post(photos[0].read_bytes(), "text/plain"), post(b"a=1", "application/x-www-form-urlencoded")],
        422: [post(photos[0].read_bytes(), query="?top_k=0"), post(photos[0].read_bytes(), query="?top_k=many")],
    }
    text_part = client.post("/v1/classify", files=[("file", ("notes.txt", b"hi", "text/plain"))])
    no_file = client.post(
        "/v1/classify", files=[("other", ("a.png", encoded(np.zeros((8, 8, 3), np.uint8)), "image/png"))]
    )
    cases[415].append(text_part)
    cases[422].append(no_file)
    for status, responses in cases.items():
        for r in responses:
            assert r.status_code == status, (status, r.text)
            error = r.json()["error"]
            assert set(r.json()) == {"error"} and "\n" not in error and "Traceback" not in error
            assert error.endswith(".") and len(error) < 300
    assert "notes.txt is text/plain" in text_part.json()["error"]


def test_a_decompression_bomb_is_refused_from_its_header(client):
    """A 10,000 x 10,000 PNG of zeros is 200 kB on the wire; its header says 100 MP, over the limit: 413 without
    decoding it (the answer comes at least 5x faster than decoding it would take, measured beside it)."""
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buffer, "PNG", optimize=False, compress_level=9)
    bomb = buffer.getvalue()
    assert len(bomb) < 4_000_000
    start = time.perf_counter()
    r = client.post("/v1/classify", content=bomb, headers={"Content-Type": "image/png"})
    refused = time.perf_counter() - start
    assert r.status_code == 413 and "10000x10000 pixels" in r.json()["error"]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own bomb warning: this decode is the test's yardstick
        Image.open(io.BytesIO(bomb)).load()  # what decoding it would have cost
    assert refused < (time.perf_counter() - start) / 5


def test_routes_that_read_state(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data", "classification"]
    meta = client.get("/v2/models/vit_cifar").json()
    assert meta["inputs"][0]["datatype"] == "BYTES" and meta["outputs"][0]["shape"] == [-1, len(CLASSES)]
    assert client.get("/v2/models/vit_cifar/ready").json()["ready"] is True
    for path in ("/v2/models/resnet50", "/v2/models/resnet50/ready", "/nothing"):
        r = client.get(path)
        assert r.status_code == 404 and set(r.json()) == {"error"}
    assert client.get("/v1/model").json()["classes"] == CLASSES
    page = client.get("/")
    assert page.status_code == 200 and 'id="files"' in page.text and "v1/classify" in page.text
    assert client.get("/docs").status_code == 200
    assert "/v2/models/{name}/infer" in client.get("/openapi.json").json()["paths"]
    assert client.get("/v1/classify").status_code == 405


def test_metrics_count_routes_statuses_and_stages(client, photos):
    client.post("/v1/classify", content=photos[1].read_bytes(), headers={"Content-Type": "image/jpeg"})
    client.post("/v1/classify", content=b"junk", headers={"Content-Type": "image/jpeg"})
    text = client.get("/metrics").text
    assert 'vitkit_requests_total{route="/v1/classify",status="200"}' in text
    assert 'vitkit_requests_total{route="/v1/classify",status="400"}' in text
    for name in ("decode", "queue", "inference", "request", "batch_size"):
        assert f"vitkit_{name}" in text
    count = float(text.split("vitkit_inference_seconds_count ")[1].split()[0])
    assert count >= 1
    assert "vitkit_requests_in_flight 0.0" in text


# KServe v2 ------------------------------------------------------------------------------------------------


def v1_probabilities(client, data: bytes) -> dict[str, float]:
    answer = client.post(f"/v1/classify?top_k={len(CLASSES)}", content=data, headers={"Content-Type": "image/jpeg"})
    return {a["label"]: a["score"] for a in answer.json()}


def test_v2_infer_with_base64_json_as_kserve_sends_it(client, photos):
    images = [p.read_bytes() for p in photos[:2]]
    request = {
        "id": "42",
        "inputs": [
            {"name": "image", "shape": [2], "datatype": "BYTES", "data": [base64.b64encode(b).decode() for b in images]}
        ],
    }
    r = client.post("/v2/models/vit_cifar/infer", json=request)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "42" and out["model_name"] == "vit_cifar"
    tensor = out["outputs"][0]
    assert tensor["datatype"] == "FP32" and tensor["shape"] == [2, len(CLASSES)]
    probabilities = np.array(tensor["data"]).reshape(2, -1)
    for row, data in zip(probabilities, images):
        expected = v1_probabilities(client, data)
        assert np.allclose(row, [expected[c] for c in CLASSES], atol=1e-5)

    request["outputs"] = [{"name": "probabilities", "parameters": {"classification": 2}}]
    top = client.post("/v2/models/vit_cifar/infer", json=request).json()["outputs"][0]
    assert top["datatype"] == "BYTES" and top["shape"] == [2, 2]
    score, index, label = top["data"][0].split(":")
    assert CLASSES[int(index)] == label and abs(float(score) - probabilities[0].max()) < 1e-5


def test_v2_infer_with_binary_tensor_data(client, photos):
    """Triton's binary extension: raw image bytes after the JSON header, each element length-prefixed, and a
    binary output when asked for."""
    images = [p.read_bytes() for p in photos[:3]]
    raw = b"".join(struct.pack("<I", len(b)) + b for b in images)
    head = json.dumps({
        "inputs": [{"name": "image", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    r = client.post(
        "/v2/models/vit_cifar/infer",
        content=head + raw,
        headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    answer = json.loads(r.content[:n])
    size = answer["outputs"][0]["parameters"]["binary_data_size"]
    probabilities = np.frombuffer(r.content[n : n + size], dtype="<f4").reshape(3, len(CLASSES))
    expected = v1_probabilities(client, images[2])
    assert np.allclose(probabilities[2], [expected[c] for c in CLASSES], atol=1e-5)


def test_malformed_v2_requests_are_422(client, photos):
    good = base64.b64encode(photos[0].read_bytes()).decode()
    bad = [
        b"{not json",
        json.dumps({"inputs": []}),
        json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}]}),
        json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["***"]}]}),
        json.dumps({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": [good]}]}),
        json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [good]}], "outputs": [{"name": "x"}]}),
        json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [good]}],
                    "outputs": [{"name": "probabilities", "parameters": {"classification": -1}}]}),
    ]  # fmt: skip
    for body in bad:
        r = client.post("/v2/models/vit_cifar/infer", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and set(r.json()) == {"error"}, (body, r.text)
    not_image = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"x").decode()]}]
    }
    assert client.post("/v2/models/vit_cifar/infer", json=not_image).status_code == 400
    assert client.post("/v2/models/other/infer", json=not_image).status_code == 404


def test_a_triton_client_works_unchanged(model, photos):
    """tritonclient's HTTP client (binary data both ways, classification) against a real socket."""
    tritonclient = pytest.importorskip("tritonclient.http")
    with LiveServer(create_app(model, ServeOptions(max_batch=4))) as server:
        triton = tritonclient.InferenceServerClient(f"127.0.0.1:{server.port}")
        assert triton.is_server_live() and triton.is_server_ready() and triton.is_model_ready("vit_cifar")
        assert triton.get_model_metadata("vit_cifar")["outputs"][0]["name"] == "probabilities"
        images = np.array([p.read_bytes() for p in photos[:2]], dtype=np.object_)
        tensor = tritonclient.InferInput("image", [2], "BYTES")
        tensor.set_data_from_numpy(images)
        output = tritonclient.InferRequestedOutput("probabilities", class_count=3)
        result = triton.infer("vit_cifar", [tensor], outputs=[output]).as_numpy("probabilities")
        assert result.shape == (2, 3)
        score, index, label = result[0, 0].decode().split(":")
        assert CLASSES[int(index)] == label
        plain = triton.infer("vit_cifar", [tensor]).as_numpy("probabilities")
        assert plain.shape == (2, len(CLASSES)) and abs(plain[0].max() - float(score)) < 1e-5


# keys, limits, deadlines, readiness ------------------------------------------------------------------------


def test_an_api_key_guards_the_model_routes_but_not_the_probes(model, photos):
    client = ready_client(create_app(model, ServeOptions(max_batch=2, api_key=KEY)))
    body, headers = photos[0].read_bytes(), {"Content-Type": "image/jpeg"}
    for extra in ({}, {"Authorization": "Bearer wrong key!"}, {"X-API-Key": KEY[:-1]}):
        r = client.post("/v1/classify", content=body, headers={**headers, **extra})
        assert r.status_code == 401 and "API key" in r.json()["error"]
        assert client.get("/v2/models/vit_cifar", headers=extra).status_code == 401
    assert (
        client.post("/v1/classify", content=body, headers={**headers, "Authorization": f"Bearer {KEY}"}).status_code
        == 200
    )
    assert client.post("/v1/classify", content=body, headers={**headers, "X-API-Key": KEY}).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200 and client.get("/metrics").status_code == 200
    assert client.post("/admin/reload").status_code == 401
    client.__exit__(None, None, None)
    with pytest.raises(ValueError, match="at least 8"):
        ServeOptions(api_key="short")


def test_readiness_waits_for_the_warm_up(model):
    release = threading.Event()
    slow = variant(model, warm_up=lambda max_batch: release.wait(30))
    with TestClient(create_app(slow, ServeOptions(max_batch=2))) as client:
        assert client.get("/v2/health/live").status_code == 200
        not_yet = client.get("/v2/health/ready")
        assert not_yet.status_code == 503 and not_yet.headers["Retry-After"] == "1"
        assert client.post("/v1/classify", content=b"x", headers={"Content-Type": "image/png"}).status_code == 503
        release.set()
        deadline = time.monotonic() + 30
        while client.get("/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_warm_up_runs_every_batch_size(model):
    seen = []
    counting = variant(model, lambda pixels: seen.append(len(pixels)) or model.run(pixels))
    counting.warm_up(5)
    assert seen == [1, 2, 3, 4, 5]


def test_a_request_past_its_deadline_gets_504_and_its_image_is_dropped(model, photos):
    calls = []

    def slow(pixels):
        calls.append(len(pixels))
        time.sleep(0.6)
        return model.run(pixels)

    app = create_app(variant(model, slow, lambda n: None), ServeOptions(max_batch=1, timeout_s=0.3))
    client = ready_client(app)
    body = photos[0].read_bytes()
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                client.post("/v1/classify", content=body, headers={"Content-Type": "image/jpeg"})
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [504] * 3
    assert all("deadline" in r.json()["error"] for r in results)
    time.sleep(1.0)
    assert len(calls) < 3  # the images queued behind the first were dropped, not computed for nobody
    client.__exit__(None, None, None)


def test_a_model_that_fails_answers_500_without_internals(model, photos):
    def broken(pixels):
        raise RuntimeError("secret internal detail")

    client = ready_client(create_app(variant(model, broken, lambda n: None)))
    r = client.post("/v1/classify", content=photos[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 500 and "secret" not in r.text and set(r.json()) == {"error"}
    client.__exit__(None, None, None)


def test_sources_the_server_refuses_in_one_sentence(run, tmp_path):
    with pytest.raises(ValueError, match="non-builtin ops"):
        open_model(THIRD_PARTY_TFLITE)  # the keras.io example's own file needs TensorFlow's Flex ops
    with pytest.raises(FileNotFoundError, match="no verified float onnx export"):
        open_model(run, backend="onnx")
    with pytest.raises(ValueError, match="Unknown backend"):
        open_model(run, backend="tensorrt")
    with pytest.raises(FileNotFoundError, match="holds no best.json"):
        open_model(tmp_path)
    for bad in (
        dict(max_batch=0),
        dict(max_in_flight=-1),
        dict(timeout_s=0),
        dict(max_batch_delay_ms=-1),
        dict(threads=0),
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServeOptions(**bad)


def test_the_server_imports_no_training_code():
    import subprocess
    import sys

    code = (
        "import sys; import vitkit.serve.app, vitkit.serve.backends; "
        "print(sorted(m for m in sys.modules if m.startswith('vitkit.training')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# a real socket, under load --------------------------------------------------------------------------------


async def _load(url: str, bodies: list[bytes], concurrency: int, total: int, during=None) -> list:
    import httpx

    results, next_index = [], iter(range(total))
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as http:

        async def worker():
            for i in next_index:
                r = await http.post(
                    url + "/v1/classify", content=bodies[i % len(bodies)], headers={"Content-Type": "image/jpeg"}
                )
                results.append((r.status_code, r.headers.get("Retry-After"), r.headers.get("X-Model-Version")))

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        if during is not None:
            await during(http)
        await asyncio.gather(*tasks)
    return results


def test_load_batches_requests_and_sheds_what_is_over_the_limit(model, photos):
    bodies = [p.read_bytes() for p in photos[:2]]
    with LiveServer(create_app(model, ServeOptions(max_batch=8, max_in_flight=64))) as server:
        results = asyncio.run(_load(server.url, bodies, concurrency=16, total=160))
        import httpx

        metrics = httpx.get(server.url + "/metrics").text
    assert [r[0] for r in results] == [200] * 160
    batches = float(metrics.split("vitkit_batch_size_count ")[1].split()[0])
    images = float(metrics.split("vitkit_batch_size_sum ")[1].split()[0])
    assert images >= 160 and batches < images  # several images per model call under load

    def slow(pixels):
        time.sleep(0.02)
        return model.run(pixels)

    tight = variant(model, slow)
    with LiveServer(create_app(tight, ServeOptions(max_batch=2, max_in_flight=4))) as server:
        results = asyncio.run(_load(server.url, bodies, concurrency=16, total=120))
    statuses = [r[0] for r in results]
    assert set(statuses) <= {200, 503} and statuses.count(503) > 0 and statuses.count(200) > 0
    assert all(r[1] == "1" for r in results if r[0] == 503)


def test_reload_under_load_loses_no_request(run, photos, tmp_path):
    import httpx

    first = open_model(run, backend="torch", device="cpu")
    other = write_checkpoint(tmp_path / "other", seed=1)
    app = create_app(first, ServeOptions(max_batch=4, api_key=KEY), source=run)
    bodies = [p.read_bytes() for p in photos[:2]]
    with LiveServer(app) as server:

        async def reload_twice(http: httpx.AsyncClient):
            await asyncio.sleep(0.3)
            key = {"Authorization": f"Bearer {KEY}"}
            r = await http.post(server.url + "/admin/reload", json={"source": str(other)}, headers=key)
            assert r.status_code == 200, r.text
            await asyncio.sleep(0.3)
            bad = await http.post(server.url + "/admin/reload", json={"source": str(tmp_path / "missing")}, headers=key)
            assert bad.status_code == 422 and "still serving" in bad.json()["error"]

        headers = {"Authorization": f"Bearer {KEY}"}
        results = []

        async def go():
            async with httpx.AsyncClient(timeout=60, headers=headers) as http:
                sem = asyncio.Semaphore(8)

                async def one(i):
                    async with sem:
                        r = await http.post(
                            server.url + "/v1/classify", content=bodies[i % 2], headers={"Content-Type": "image/jpeg"}
                        )
                        results.append((r.status_code, r.headers.get("X-Model-Version")))
                        await asyncio.sleep(0.005)

                await asyncio.gather(reload_twice(http), *(one(i) for i in range(240)))

        asyncio.run(go())
    assert [r[0] for r in results] == [200] * 240
    versions = [r[1] for r in results]
    assert len(set(versions)) == 2 and versions[-1] != versions[0]  # both models answered, the new one last


# the command ----------------------------------------------------------------------------------------------


def test_the_command_serves_reloads_on_sighup_and_stops_on_sigterm(run, photos, tmp_path):
    """`vitkit serve` itself: the batcher in the main thread, uvicorn in another; SIGHUP reloads, SIGTERM
    ends it with exit code 0, and a port already taken is one sentence with exit code 2."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "vitkit", "serve", str(run), "--port", str(port), "--max-batch", "2", "--threads", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        r = httpx.post(url + "/v1/classify", content=photos[0].read_bytes(), headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200 and r.headers["X-Backend"] == "torch"

        taken = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert taken.returncode == 2 and "Could not listen" in taken.stderr and "Traceback" not in taken.stderr

        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reloaded:" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert (
            httpx.post(
                url + "/v1/classify", content=photos[1].read_bytes(), headers={"Content-Type": "image/jpeg"}
            ).status_code
            == 200
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_auto_picks_among_verified_exports_and_ignores_stale_ones(tmp_path):
    """With a verified ONNX export beside the checkpoint, auto times both and says so; an export older than
    the weights (a later training run in the same folder) is not a candidate."""
    import os

    pytest.importorskip("onnxruntime")
    from vitkit.export import export
    from vitkit.serve.backends import verified_exports

    data = tmp_path / "photos"
    for i, name in enumerate(CLASSES):
        (data / name).mkdir(parents=True)
        for j in range(4):
            (data / name / f"{j}.png").write_bytes(encoded(np.full((40, 56, 3), 40 * i + 10 * j, np.uint8)))
    run = write_checkpoint(tmp_path / "run")
    meta = json.loads((run / "best.json").read_text())
    meta["data"]["spec"] = str(data)
    (run / "best.json").write_text(json.dumps(meta))
    export(run, "onnx", log=lambda s: None)
    assert [p.suffix for p in verified_exports(run)] == [".onnx"]
    said = []
    served = open_model(run, backend="auto", device="cpu", max_batch=2, log=said.append)
    assert served.backend in ("torch", "onnx") and "torch" in said[0] and "onnx" in said[0]
    assert open_model(run, backend="onnx").backend == "onnx"
    future = time.time() + 60
    os.utime(run / "best.safetensors", (future, future))
    assert verified_exports(run) == []
