"""Released weights by URL, such as ml-cvnets' ImageNet checkpoints:
``https://docs-assets.developer.apple.com/ml-research/models/cvnets/classification/mobilevit_xxs.pt``.

A file is downloaded once into ``$VITKIT_CACHE/weights`` (written to a temporary file, renamed into place only
once complete and readable as weights), then read from there. A ``#sha256=HEX`` suffix on the URL (as pip
writes it) is checked on every download; without one, the digest of the first download is recorded beside the
file and the cached copy is checked against it on every later use, so a file damaged on disk is fetched again.
``HF_HUB_OFFLINE=1`` (huggingface_hub's switch, so one setting covers both kinds of names) uses the cache only.

For ml-cvnets' release paths the preset comes from the file name, the class names are ImageNet-1k's, and the
weights take BGR input: ml-cvnets v1 read images with OpenCV, and transformers' conversions of these same
files (apple/mobilevit-*, apple/mobilevitv2-*) flip the channel order in their image processors.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

URL = re.compile(r"^(https?|file)://", re.IGNORECASE)
# ml-cvnets' layout: .../cvnets/classification/mobilevit_xxs.pt, .../cvnets-v2/classification/mobilevitv2/
# imagenet1k/256x256/mobilevitv2-0.5.pt
CVNETS_RELEASE = re.compile(
    r"/ml-research/models/cvnets(?:-v2)?/classification/(?:[\w.-]+/)*?(?:(?P<size>\d+)x\d+/)?"
    r"(?:mobilevit_(?P<v1>xxs|xs|s)|mobilevitv2-(?P<v2>\d+(?:\.\d+)?))\.pt$"
)


def is_url(spec: str) -> bool:
    return URL.match(spec) is not None


def download_weights(url: str) -> Path:
    """The cached file for ``url`` (downloaded now if needed), verified and readable as weights."""
    from vitkit.data.download import RemoteFile, fetch_lock, cache_dir, download_file

    address, _, fragment = url.partition("#")
    expected = fragment[len("sha256=") :].lower() if fragment.startswith("sha256=") else None
    folder = cache_dir() / "weights" / hashlib.sha256(address.encode()).hexdigest()[:16]
    remote = RemoteFile(address)
    path, record = folder / remote.filename, folder / f"{remote.filename}.sha256"
    # one process at a time per file (torchrun's ranks resolve --pretrained together); files a killed
    # download left are removed on entry
    with fetch_lock(folder):
        digest = expected or (record.read_text().strip() if record.is_file() else None)
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            return _offline(url, path, record, digest)
        try:
            path = download_file(RemoteFile(address, sha256=digest), folder)  # refetched if the cached copy fails
        except ValueError as e:
            if digest is not None and expected is None and "wrong checksum" in str(e):
                raise ValueError(
                    f"{url} no longer matches the copy first downloaded; if it changed upstream on purpose, "
                    f"delete {record} and run again."
                ) from None
            raise
        if digest is None:
            _check_readable(path, url)
            from vitkit.utils import atomic_write_text, file_digest

            atomic_write_text(record, file_digest(path, "sha256") + "\n")
    return path


def _offline(url: str, path: Path, record: Path, digest: str | None) -> Path:
    from vitkit.utils import file_digest

    if not path.is_file():
        raise FileNotFoundError(f"{url} is not in the cache and HF_HUB_OFFLINE is set; download it once while online.")
    if digest is None:
        _check_readable(path, url)  # a copy whose digest was never recorded (its first download was killed)
    elif file_digest(path, "sha256") != digest:
        raise ValueError(f"The cached copy of {url} is damaged ({path}); unset HF_HUB_OFFLINE to fetch it again.")
    return path


def _check_readable(path: Path, url: str) -> None:
    """A complete download that is not a weights file vitkit reads (an error page under the file's name, a
    pickle holding code) is removed, so that nothing in the cache can later pass for weights."""
    from vitkit.weights.keras import is_keras_file
    from vitkit.weights.load import read_state_dict

    try:
        if is_keras_file(path):  # read by h5py later; here its signature: HDF5 (.weights.h5) or zip (.keras)
            signature = b"PK\x03\x04" if path.name.endswith(".keras") else b"\x89HDF\r\n\x1a\n"
            with open(path, "rb") as f:
                if f.read(len(signature)) != signature:
                    raise ValueError(f"not a Keras {'.keras' if signature.startswith(b'PK') else 'HDF5'} file")
        elif not read_state_dict(path):
            raise ValueError("no tensors")
    except Exception as e:
        path.unlink(missing_ok=True)
        reason = str(e).strip().splitlines()[0].replace(f"{path} ", "") if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{url} is not a weights file vitkit reads ({reason.split(';')[0][:120]}); nothing was kept. "
            "Check the address."
        ) from None


def cvnets_release(url: str) -> tuple[str | None, bool, int | None]:
    """(the vitkit preset, whether the weights take BGR, their image size when the path names one) for an
    ml-cvnets release URL; (None, False, None) otherwise."""
    match = CVNETS_RELEASE.search(url.partition("#")[0])
    if match is None:
        return None, False, None
    size = int(match["size"]) if match["size"] else None
    if match["v1"]:
        return f"mobilevit_{match['v1']}", True, size
    return f"mobilevitv2_{round(100 * float(match['v2'])):03d}", True, size
