"""Dynamic batching: one thread runs the model; requests that arrive while it is busy go in together.

The batcher never holds a request back while the model is idle: a request that finds the model free runs at
once, alone. Requests that arrive during a call wait for it to end and then run as one batch (up to
``max_batch``), which is where the throughput under load comes from. ``max_delay`` only lets a batch wait
for requests already admitted and still being decoded, never for requests that may come.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from vitkit.serve.backends import ServedModel


@dataclass
class Result:
    probabilities: np.ndarray  # [classes]
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass
class _Item:
    pixels: torch.Tensor  # uint8 [3, S, S]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)


def _resolve(future: asyncio.Future, value: object) -> None:
    if not future.done():  # a request past its deadline was cancelled meanwhile
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)


class Batcher:
    def __init__(self, model: ServedModel, max_batch: int = 16, max_delay: float = 0.002, metrics=None):
        self.model, self.max_batch, self.max_delay, self.metrics = model, max_batch, max_delay, metrics
        self.queue: deque[_Item] = deque()
        self.decoding = 0  # requests admitted to this model and still being decoded
        self.busy = False
        self.stopping = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name=f"vitkit-batcher-{model.name}", daemon=True)
        self.thread.start()

    def submit(self, pixels: torch.Tensor) -> asyncio.Future:
        """Queue one image's evaluation pixels; the future resolves to a ``Result`` (from the event loop)."""
        loop = asyncio.get_running_loop()
        item = _Item(pixels, loop.create_future(), loop)
        with self.cond:
            self.queue.append(item)
            self.cond.notify()
        return item.future

    def decode_started(self) -> None:
        with self.cond:
            self.decoding += 1

    def decode_ended(self) -> None:
        with self.cond:
            self.decoding -= 1
            self.cond.notify()

    def stop(self) -> None:
        """Finish what is queued, then end the thread (a model swapped out by a reload)."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()

    def _take(self) -> list[_Item] | None:
        with self.cond:
            while not self.queue and not self.stopping:
                self.cond.wait()
            if not self.queue:
                return None  # stopping, nothing left
            end = time.perf_counter() + self.max_delay
            while len(self.queue) < self.max_batch and self.decoding > 0 and not self.stopping:
                left = end - time.perf_counter()
                if left <= 0:
                    break
                self.cond.wait(left)
            batch = []
            while self.queue and len(batch) < self.max_batch:
                item = self.queue.popleft()
                if not item.future.cancelled():  # its request gave up (deadline passed); skip the work
                    batch.append(item)
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            if not batch:
                continue
            start = time.perf_counter()
            try:
                probabilities = self.model.run(torch.stack([item.pixels for item in batch]))
            except Exception as e:  # the model failed: every request of the batch gets the error, the server lives
                for item in batch:
                    item.loop.call_soon_threadsafe(_resolve, item.future, e)
                continue
            inference = time.perf_counter() - start
            if self.metrics is not None:
                self.metrics.batch(len(batch), inference, [start - item.enqueued for item in batch])
            for item, row in zip(batch, probabilities):
                result = Result(row, start - item.enqueued, inference, len(batch))
                item.loop.call_soon_threadsafe(_resolve, item.future, result)
