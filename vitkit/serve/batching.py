"""Dynamic batching: one thread does all of PyTorch's work; requests that arrive while it is busy go in together.

The batcher never holds a request back while the model is idle: a request that finds the model free runs at
once, alone. Requests that arrive during a call wait for it to end and then run as one batch (up to
``max_batch``), which is where the throughput under load comes from. ``max_delay`` only lets a batch wait
for requests already admitted and still being decoded, never for requests that may come.

Why one thread, and why ``vitkit serve`` makes it the main thread: PyTorch's CPU kernels run on an OpenMP team
per calling thread, and once a process holds more OpenMP threads than cores, libgomp stops spinning and wakes
its threads through the kernel at every parallel region. Measured on 2 cores, MobileViT-XXS at batch 1 took
18 ms from the main thread and 30-44 ms from any other thread of the same process. So decoding threads run
Pillow only (no OpenMP), and the batcher thread both preprocesses (``eval_pixels``) and runs the model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from vitkit.data.images import eval_array
from vitkit.serve.backends import ServedModel


@dataclass
class Result:
    probabilities: np.ndarray  # [classes]
    queue_s: float
    inference_s: float  # preprocessing and the model call of the batch it ran in
    batch_size: int


@dataclass
class _Item:
    model: ServedModel  # the model the request was admitted for (a reload does not move it)
    image: np.ndarray  # [H, W, 3] uint8, decoded
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
    def __init__(self, max_batch: int = 16, max_delay: float = 0.002, metrics=None):
        self.max_batch, self.max_delay, self.metrics = max_batch, max_delay, metrics
        self.queue: deque[_Item] = deque()
        self.jobs: deque[tuple[Callable[[], object], Future]] = deque()  # other PyTorch work: loading, warm-up
        self.decoding = 0  # requests admitted and still being decoded
        self.stopping = False
        self.cond = threading.Condition()

    def start_thread(self) -> threading.Thread:
        """Run the loop in a thread of its own (an app embedded in another server, the tests); ``vitkit serve``
        runs it in the main thread instead."""
        thread = threading.Thread(target=self.run, name="vitkit-batcher", daemon=True)
        thread.start()
        return thread

    def submit(self, model: ServedModel, image: np.ndarray) -> asyncio.Future:
        """Queue one decoded image; the future resolves to a ``Result`` (call from the event loop)."""
        loop = asyncio.get_running_loop()
        item = _Item(model, image, loop.create_future(), loop)
        with self.cond:
            self.queue.append(item)
            self.cond.notify()
        return item.future

    def call(self, fn: Callable[[], object]) -> Future:
        """Run ``fn`` on the batcher's thread between batches (loading and warming up a model use PyTorch too)."""
        future: Future = Future()
        with self.cond:
            self.jobs.append((fn, future))
            self.cond.notify()
        return future

    def decode_started(self) -> None:
        with self.cond:
            self.decoding += 1

    def decode_ended(self) -> None:
        with self.cond:
            self.decoding -= 1
            self.cond.notify()

    def stop(self) -> None:
        """Finish what is queued, then return from ``run``."""
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def _take(self) -> list[_Item] | tuple | None:
        with self.cond:
            while not self.queue and not self.jobs and not self.stopping:
                self.cond.wait(0.5)  # a timeout keeps the main thread responsive to signals
            if self.jobs:
                return self.jobs.popleft()
            if not self.queue:
                return None  # stopping, nothing left
            end = time.perf_counter() + self.max_delay
            while len(self.queue) < self.max_batch and self.decoding > 0 and not self.stopping:
                left = end - time.perf_counter()
                if left <= 0:
                    break
                self.cond.wait(left)
            batch = []
            model = self.queue[0].model
            while self.queue and len(batch) < self.max_batch and self.queue[0].model is model:
                item = self.queue.popleft()
                if not item.future.cancelled():  # its request gave up (deadline passed); skip the work
                    batch.append(item)
            return batch

    def run(self) -> None:
        while (work := self._take()) is not None:
            if isinstance(work, tuple):
                fn, future = work
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as e:  # handed to the caller, who reports it
                        future.set_exception(e)
            elif work:
                self._run_batch(work)

    def _run_batch(self, batch: list[_Item]) -> None:
        start = time.perf_counter()
        model = batch[0].model
        try:
            pixels = torch.stack([eval_array(item.image, model.preprocess) for item in batch])
            probabilities = model.run(pixels)
        except Exception as e:  # the model failed: every request of the batch gets the error, the server lives
            for item in batch:
                item.loop.call_soon_threadsafe(_resolve, item.future, e)
            return
        inference = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.batch(len(batch), inference, [start - item.enqueued for item in batch])
        for item, row in zip(batch, probabilities):
            result = Result(row, start - item.enqueued, inference, len(batch))
            item.loop.call_soon_threadsafe(_resolve, item.future, result)
