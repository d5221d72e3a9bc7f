"""LitServe serving the same ``ServedModel`` as `vitkit serve` (the runtime, threads and preprocessing function),
for benchmarks/serve_load.py. LitServe's way of taking an image: base64 in a JSON body.

    PYTHONPATH=. python benchmarks/litserve_app.py SOURCE BACKEND PORT THREADS MAX_BATCH BATCH_TIMEOUT_S
"""

from __future__ import annotations

import base64
import sys

import litserve as ls
import numpy as np
import torch

from vitkit.data.images import eval_image
from vitkit.serve.backends import open_model


class VitkitAPI(ls.LitAPI):
    def __init__(self, source: str, backend: str, threads: int, max_batch: int, batch_timeout: float):
        super().__init__(max_batch_size=max_batch, batch_timeout=batch_timeout)
        self.source, self.backend, self.threads = source, backend, threads

    def setup(self, device):
        torch.set_num_threads(self.threads)
        self.model = open_model(self.source, self.backend, "cpu", self.threads, self.max_batch_size, log=lambda s: None)
        self.model.warm_up(self.max_batch_size)

    def decode_request(self, request):
        return eval_image(base64.b64decode(request["image"]), self.model.preprocess)

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, pixels):
        return self.model.run(pixels)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, probabilities):
        top = np.argsort(-probabilities)[:5]
        return [{"label": self.model.class_names[i], "score": float(probabilities[i])} for i in top]


if __name__ == "__main__":
    source, backend, port, threads, max_batch, timeout = sys.argv[1:7]
    api = VitkitAPI(source, backend, int(threads), int(max_batch), float(timeout))
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(port=int(port), host="127.0.0.1", generate_client_file=False)
