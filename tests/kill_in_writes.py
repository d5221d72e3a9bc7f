"""Run a vitkit command that SIGKILLs itself inside its Nth file write: ``python -m tests.kill_in_writes WHERE N
ARGS...``, where WHERE is

- ``inside``: halfway through writing the Nth temporary file (its first half on disk, then the kill);
- ``before``: when the Nth rename is due (every temporary file of that write complete, none renamed);
- ``after``: just after the Nth rename;
- ``between``: just after the Nth rename of a weights file, before its state and JSON are renamed.

Every vitkit write goes through ``vitkit.utils`` (a temporary file beside the target, then ``os.replace``), so
counting those two steps steers a kill into any write, checkpoints first among them. ``N=0`` kills nothing and
prints the counts at exit, for choosing N.
"""

from __future__ import annotations

import atexit
import io
import os
import signal
import sys
from pathlib import Path

import torch


def arm(where: str, n: int) -> None:
    counts = {"inside": 0, "rename": 0, "weights": 0}
    real_replace, real_write_bytes, real_write_text = os.replace, Path.write_bytes, Path.write_text

    def die() -> None:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def replace(src, dst, **kwargs):
        counts["rename"] += 1
        if where == "before" and counts["rename"] == n:
            die()
        real_replace(src, dst, **kwargs)
        counts["weights"] += str(dst).endswith(".safetensors")
        if (where == "after" and counts["rename"] == n) or (where == "between" and counts["weights"] == n):
            die()

    def half_then_die(self: Path, data) -> None:
        half = data[: len(data) // 2]
        (real_write_bytes if isinstance(half, bytes) else real_write_text)(self, half)
        die()

    def write_bytes(self: Path, data):
        if self.name.endswith(".tmp"):
            counts["inside"] += 1
            if where == "inside" and counts["inside"] == n:
                half_then_die(self, data)
        return real_write_bytes(self, data)

    def write_text(self: Path, data, *args, **kwargs):
        if self.name.endswith(".tmp"):
            counts["inside"] += 1
            if where == "inside" and counts["inside"] == n:
                half_then_die(self, data)
        return real_write_text(self, data, *args, **kwargs)

    def torch_save(obj, f, *args, **kwargs):  # the resume state
        if isinstance(f, Path) and f.name.endswith(".tmp"):
            counts["inside"] += 1
            if where == "inside" and counts["inside"] == n:
                buffer = io.BytesIO()
                real_torch_save(obj, buffer, *args, **kwargs)
                half_then_die(f, buffer.getvalue())
        return real_torch_save(obj, f, *args, **kwargs)

    os.replace, Path.write_bytes, Path.write_text = replace, write_bytes, write_text
    real_torch_save, torch.save = torch.save, torch_save
    if n == 0:
        atexit.register(lambda: print(f"writes: {counts['inside']} renames: {counts['rename']}", file=sys.stderr))


if __name__ == "__main__":
    arm(sys.argv[1], int(sys.argv[2]))
    from vitkit.cli.main import main

    sys.exit(main(sys.argv[3:]))
