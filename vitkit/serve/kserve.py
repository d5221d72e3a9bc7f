"""The KServe v2 / Open Inference Protocol subset vitkit speaks, with Triton's two extensions clients use for
images: binary tensor data (raw bytes after the JSON header) and classification (top-k as strings).

An image travels as one element of a BYTES input: base64 text in JSON (as KServe's image examples send it), or
raw bytes in the binary section, each element prefixed by its length (4 bytes, little-endian), as Triton's
binary tensor data extension lays out BYTES tensors.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct

import numpy as np

OUTPUT = "probabilities"
HEADER_LENGTH = "Inference-Header-Content-Length"


class Malformed(ValueError):
    """A request the protocol cannot read (answered 422)."""


def _flatten(data) -> list:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _unpack_bytes(raw: bytes) -> list[bytes]:
    """Triton's serialisation of a BYTES tensor: [uint32 little-endian length][bytes] per element."""
    items, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise Malformed("The binary BYTES data ends inside an element's 4-byte length.")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise Malformed("A binary BYTES element is longer than the data sent.")
        items.append(raw[at : at + size])
        at += size
    return items


def pack_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def parse_infer(body: bytes, header_length: str | None) -> tuple[dict, list[bytes]]:
    """An infer request -> (its JSON, the encoded images of its BYTES input)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise Malformed(f"{HEADER_LENGTH} must be a number of bytes, not '{header_length}'.") from None
        if not 0 <= n <= len(body):
            raise Malformed(f"{HEADER_LENGTH} is {n}, but the body holds {len(body)} bytes.")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Malformed(f"The request is not valid JSON ({e}).") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise Malformed('An infer request needs "inputs": a list with one BYTES tensor of encoded images.')
    if len(request["inputs"]) != 1:
        raise Malformed("Send one input: a BYTES tensor of encoded images.")
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict) or tensor.get("datatype") != "BYTES":
        raise Malformed('The input must have "datatype": "BYTES", each element one encoded image.')
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or size > len(binary):
            raise Malformed(f"binary_data_size {size!r} does not fit the {len(binary)} bytes after the JSON header.")
        images = _unpack_bytes(binary[:size])
    else:
        if "data" not in tensor:
            raise Malformed('The input holds no "data" and no binary_data_size.')
        try:
            images = [base64.b64decode(item, validate=True) for item in _flatten(tensor["data"])]
        except (binascii.Error, TypeError, ValueError):
            raise Malformed("Each element of a JSON BYTES input must be a base64 string of an encoded image.") from None
    shape = tensor.get("shape")
    if not isinstance(shape, list) or int(np.prod(shape or [0])) != len(images):
        raise Malformed(f"The input's shape {shape!r} does not match its {len(images)} elements.")
    if not images:
        raise Malformed("The input holds no images.")
    return request, images


def _requested_outputs(request: dict) -> list[dict]:
    outputs = request.get("outputs") or [{"name": OUTPUT}]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise Malformed('"outputs" must be a list of objects with a "name".')
    for output in outputs:
        if output.get("name") != OUTPUT:
            raise Malformed(f"Unknown output {output.get('name')!r}; this model has one output, '{OUTPUT}'.")
    return outputs


def check_outputs(request: dict, num_classes: int) -> None:
    """Refuse a malformed outputs section before any work is done."""
    for output in _requested_outputs(request):
        k = (output.get("parameters") or {}).get("classification", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise Malformed(f"classification must be a whole number of classes, not {k!r}.")


def infer_response(
    request: dict, name: str, version: str, class_names: list[str], probabilities: np.ndarray
) -> tuple[bytes, dict[str, str], str]:
    """(body, headers, media type) of the answer: probabilities FP32 [N, classes], or with the classification
    parameter k, BYTES [N, k] of "score:index:label" (Triton's format), as JSON or as binary data."""
    binary_default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    tensors, binary = [], []
    for output in _requested_outputs(request):
        params = output.get("parameters") or {}
        k = min(int(params.get("classification", 0)), len(class_names))
        if k:
            top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
            strings = [
                f"{probabilities[i, j]:.6f}:{j}:{class_names[j]}" for i in range(len(probabilities)) for j in top[i]
            ]
            tensor = {"name": OUTPUT, "datatype": "BYTES", "shape": [len(probabilities), k]}
            raw = pack_bytes([s.encode() for s in strings])
            values = strings
        else:
            tensor = {"name": OUTPUT, "datatype": "FP32", "shape": list(probabilities.shape)}
            raw = probabilities.astype("<f4").tobytes()
            values = [round(float(v), 7) for v in probabilities.reshape(-1)]
        if params.get("binary_data", binary_default):
            tensor["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            tensor["data"] = values
        tensors.append(tensor)
    answer = {"model_name": name, "model_version": version, "outputs": tensors}
    if "id" in request:
        answer["id"] = request["id"]
    head = json.dumps(answer).encode()
    if not binary:
        return head, {}, "application/json"
    return head + b"".join(binary), {HEADER_LENGTH: str(len(head))}, "application/octet-stream"
