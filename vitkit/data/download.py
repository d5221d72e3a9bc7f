"""Real downloads of the public data sets, checksum-verified, into vitkit's cache folder.

Tests run this code on files they generate (``file://`` URLs); nothing here is called by the tests' network.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vitkit.utils import file_digest


def cache_dir() -> Path:
    """``$VITKIT_CACHE``, else ``~/.cache/vitkit``."""
    return Path(os.environ.get("VITKIT_CACHE", Path.home() / ".cache" / "vitkit"))


@dataclass(frozen=True)
class RemoteFile:
    url: str
    md5: str | None = None
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
REMOTE = {
    "fashion-mnist": [
        RemoteFile(_FASHION + "train-images-idx3-ubyte.gz", md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        RemoteFile(_FASHION + "train-labels-idx1-ubyte.gz", md5="25c81989df183df01b3e8a0aad5dffbe"),
        RemoteFile(_FASHION + "t10k-images-idx3-ubyte.gz", md5="bef4ecab320f06d8554ea6380940ec79"),
        RemoteFile(_FASHION + "t10k-labels-idx1-ubyte.gz", md5="bb300cfdad3c16e7a12a480ee83cd310"),
    ],
    "cifar10": [
        RemoteFile("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a"),
    ],
    "flowers": [  # tf_flowers: 3,670 photos in flower_photos/<class>/
        RemoteFile(
            "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
            sha256="4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c",
        ),
    ],
}
# the folder each archive unpacks to, inside cache_dir()/NAME
EXTRACTED = {"cifar10": "cifar-10-batches-py", "flowers": "flower_photos"}


# errors of the local disk, not of the network: the advice differs
LOCAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR}


def _cannot_write(folder: Path, e: OSError) -> ValueError:
    return ValueError(
        f"Could not write into {folder} ({e.strerror or e}); free some space or set VITKIT_CACHE to another folder."
    )


def download_file(remote: RemoteFile, dest_dir: Path) -> Path:
    """Download to ``dest_dir`` atomically; a file that fails its checksum is deleted and reported."""
    dest = dest_dir / remote.filename
    if dest.is_file() and _verified(dest, remote):
        return dest
    tmp = None
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{remote.filename}.", suffix=".part")
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as response:
            from vitkit.progress import progress

            total = int(response.headers.get("Content-Length") or 0) or None
            with progress(total=total, unit="B", desc=remote.filename, unit_scale=True) as bar:
                received = 0
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
                    received += len(block)
        if total is not None and received != total:  # the server closed before the length it promised
            raise http.client.IncompleteRead(b"", total - received)
        if not _verified(tmp, remote):
            raise ValueError(
                f"{remote.url} arrived with the wrong checksum (corrupt or changed upstream); try again later."
            )
        os.replace(tmp, dest)
    except OSError as e:
        if not isinstance(e, urllib.error.URLError) and e.errno in LOCAL_ERRNOS:
            raise _cannot_write(dest_dir, e) from None
        raise ValueError(
            f"Could not download {remote.url} ({e}); check the network or place the file in {dest_dir}."
        ) from None
    except http.client.HTTPException as e:  # IncompleteRead: the server closed before the promised length
        raise ValueError(
            f"Could not download {remote.url} ({type(e).__name__}: the transfer was cut short); nothing was kept, "
            "try again."
        ) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return dest


def _verified(path: Path, remote: RemoteFile) -> bool:
    if remote.sha256:
        return file_digest(path, "sha256") == remote.sha256
    if remote.md5:
        return file_digest(path, "md5") == remote.md5
    return True


def fetch(name: str, root: Path | None = None, remote: list[RemoteFile] | None = None) -> Path:
    """Download (and unpack) data set ``name`` unless present; returns the folder to read it from."""
    if name not in REMOTE:
        raise ValueError(f"Nothing to download for '{name}'; downloadable data sets: {', '.join(REMOTE)}.")
    folder = (root or cache_dir()) / name
    if name in EXTRACTED and (folder / EXTRACTED[name]).is_dir():
        return folder / EXTRACTED[name]
    with fetch_lock(folder):
        if name in EXTRACTED and (folder / EXTRACTED[name]).is_dir():  # another process fetched it meanwhile
            return folder / EXTRACTED[name]
        files = [download_file(r, folder) for r in (remote or REMOTE[name])]
        if name not in EXTRACTED:
            return folder
        staging = Path(tempfile.mkdtemp(dir=folder, prefix=".extract-"))
        try:
            with tarfile.open(files[0]) as tar:
                tar.extractall(staging, filter="data")  # "data": no absolute paths, links out, or devices
            os.replace(staging / EXTRACTED[name], folder / EXTRACTED[name])
        except OSError as e:
            raise _cannot_write(folder, e) from None
        except tarfile.TarError as e:
            files[0].unlink()
            raise ValueError(f"{files[0].name} is not a readable archive ({e}); run the command again.") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        files[0].unlink()  # the archive is no longer needed
        return folder / EXTRACTED[name]


@contextlib.contextmanager
def fetch_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock while fetching into it: another vitkit fetching the same data set waits, so the
    temporary files found here were left by a process that was killed, and are removed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "a")
    except OSError as e:
        raise _cannot_write(folder, e) from None
    with lock:
        try:
            import fcntl
        except ImportError:  # Windows: no lock, so leave other processes' temporary files alone
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in folder.glob(".*.part"):
            stale.unlink(missing_ok=True)
        for stale in folder.glob(".extract-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield
