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
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """``atomic_path`` for files that belong together (weights, state, their JSON): every temporary file is
    written first, where a full disk fails, and only then are they renamed, in the order given (the
    describing JSON last); on error none is renamed and every temporary file is removed."""
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(_temporary_beside(Path(p))) for p in paths]
        try:
            yield temps
        except OSError as e:
            if e.filename is None and e.strerror:  # a failed write names no file: name the folder
                raise OSError(e.errno, e.strerror, str(Path(paths[0]).parent)) from None
            raise
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make shared files unreadable to others
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before any work, a destination that cannot be written: a file where a folder is needed, or a
    folder without write permission."""
    path = Path(path)
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"Cannot write {path}: {parent} is a file, not a folder; choose another path.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"Cannot write {path}: {parent} is not writable; choose another folder.")
            return


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


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """A file's hex digest, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest(path: str | os.PathLike) -> str:
    """The first 12 hex digits of a file's SHA-256: a short, stable version of weights or an exported file."""
    return file_digest(path)[:12]
