"""Progress of long work: a tqdm bar on a terminal; in a log (stderr not a terminal: a file, CI, nohup) one
line at a steady interval with the count, the rate and the time left, instead of silence until the end."""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator

INTERVAL_S = 30.0  # between log lines; VITKIT_PROGRESS_SECONDS overrides


class LogProgress:
    """The subset of tqdm's interface vitkit uses (iteration, update, set_postfix, close, a context)."""

    def __init__(
        self, iterable: Iterable | None, total: int | None, desc: str, unit: str, interval: float, initial: int = 0
    ):
        self.iterable, self.desc, self.unit, self.interval = iterable, desc, unit, interval
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.initial, self.postfix = initial, initial, ""  # initial: done before (a resumed epoch)
        self.start = self.last = time.monotonic()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and (self.total is None or self.n < self.total):
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = (self.n - self.initial) / elapsed
        done = (
            f"{self.n}/{self.total} {self.unit} ({self.n / self.total:.0%})" if self.total else f"{self.n} {self.unit}"
        )
        left = ""
        if self.total and rate > 0:
            seconds = int((self.total - self.n) / rate)
            left = f", {seconds // 60}:{seconds % 60:02d} left"
        return f"{self.desc}: {done}, {rate:.1f} {self.unit}/s{left}{self.postfix}"

    def set_postfix(self, **values) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def close(self) -> None:
        pass

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    **tqdm_options,
):
    """``tqdm(...)`` on a terminal, ``LogProgress`` in a log, nothing when ``enabled`` is False."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, **tqdm_options)
    interval = float(os.environ.get("VITKIT_PROGRESS_SECONDS", INTERVAL_S)) if enabled else float("inf")
    return LogProgress(iterable, total, desc, unit, interval, tqdm_options.get("initial", 0))
