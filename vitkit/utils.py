"""Small helpers shared across vitkit: atomic file writes, quieting third-party toolchains."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step, on error it is
    deleted, so readers see the old file or the new one and never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make shared files unreadable to others
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Silence what third-party toolchains print (Python and C++ alike, at the file-descriptor level); if the
    block fails, the captured text goes to stderr so nothing that explains the failure is lost."""
    import io
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        text = io.TextIOWrapper(log, encoding="utf-8", errors="replace", write_through=True)
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                yield
        except BaseException:
            _restore(saved)
            log.seek(0)
            sys.stderr.write(log.read().decode("utf-8", errors="replace")[-20000:])
            raise
        else:
            _restore(saved)
        finally:
            text.detach()
            for fd in saved:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _restore(saved: list[int]) -> None:
    import sys

    with contextlib.suppress(ValueError, OSError):
        sys.stdout.flush()
        sys.stderr.flush()
    with contextlib.suppress(Exception):  # C/C++ stdio buffers, so their text lands in the log, not after it
        import ctypes

        ctypes.CDLL(None).fflush(None)
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
