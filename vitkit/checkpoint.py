"""Checkpoints that describe themselves: safetensors weights + a small JSON, written atomically.

A run folder holds ``best.*`` (highest validation top-1) and ``last.*`` (the latest epoch):
``NAME.safetensors`` (the weights to use: the EMA ones when EMA is on) and ``NAME.json``, which records all
that evaluation needs without the training code: the model and its arguments, the class names, the
preprocessing exactly as training used it, the data and split it was validated on, and the metrics.
``last.state.pt`` holds the optimizer, schedule, EMA and history for ``--resume`` (tensors and plain values
only, so it loads with ``weights_only=True``).

The weights file carries a copy of its JSON in its safetensors header. Three files cannot be renamed in one
step: a kill between two renames would leave new weights beside the previous JSON, so ``read_meta`` compares
the JSON's ``save_id`` with the copy's and, when they differ (the JSON of an earlier save), takes the copy,
which always describes the weights it travels with. A JSON edited by hand keeps its save_id and is read.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.preprocess import Preprocess
from vitkit.utils import atomic_paths

FORMAT = "vitkit-checkpoint/3"
FORMAT_V2 = "vitkit-checkpoint/2"  # digits split 20% whatever val_fraction said; read, never written
FORMAT_V1 = "vitkit-checkpoint/1"  # before the preprocessing record was complete; read, never written
HEADER_KEY = "vitkit.checkpoint"  # the safetensors metadata entry holding the checkpoint's JSON


def save_checkpoint(
    folder: Path, name: str, weights: dict[str, torch.Tensor], meta: dict[str, Any], state: dict | None = None
) -> Path:
    """Write NAME.safetensors, NAME.state.pt (with ``state``) and NAME.json together: all three are written to
    temporary files first and renamed only when every one is complete, the JSON last. A full disk leaves the
    previous checkpoint whole; a kill between two renames leaves files that are each whole, the weights
    describing themselves (``read_meta``)."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    names = [f"{name}.safetensors"] + ([f"{name}.state.pt"] if state is not None else []) + [f"{name}.json"]
    # save_id ties this JSON to these weights: a hand-edited JSON keeps it, a previous save's JSON does not
    record = json.dumps(
        {"format": FORMAT, **meta, "weights": f"{name}.safetensors", "save_id": secrets.token_hex(8)}, indent=2
    )
    header = {"format": FORMAT, "model": meta["model"], HEADER_KEY: record}
    with atomic_paths(*(folder / n for n in names)) as temps:
        # bytes written by Python, so a full disk is an OSError with its errno (safetensors' own writer wraps it)
        temps[0].write_bytes(save(weights, metadata=header))
        if state is not None:
            torch.save(state, temps[1])
        temps[-1].write_text(record)
    return folder / f"{name}.json"


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (-> best.json), NAME.json or NAME.safetensors -> the checkpoint's JSON."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.json", "last.json"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path} holds no best.json or last.json; is it a vitkit training output folder?")
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}; give a run folder or its best.json / best.safetensors.")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint's JSON, with ``_folder`` (where its weights lie) added; older versions are upgraded."""
    json_path = resolve_checkpoint(path)
    try:
        meta = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path} is not valid JSON ({e}).") from None
    if isinstance(meta.get("weights"), str):
        own = _weights_own_record(json_path.parent / meta["weights"])
        if own is not None and own.get("save_id") != meta.get("save_id"):  # the JSON of an earlier save
            meta = own
    if meta.get("format") == FORMAT_V1:
        meta = _upgrade_v1(meta)
    if meta.get("format") == FORMAT_V2:
        meta = _upgrade_v2(meta)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{json_path} is not a vitkit checkpoint (format {meta.get('format')!r}).")
    meta["_folder"] = str(json_path.parent)
    return meta


def _weights_own_record(weights: Path) -> dict[str, Any] | None:
    """The JSON a weights file carries in its header (None for files written before it did, or unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(weights, "pt") as f:
            record = (f.metadata() or {}).get(HEADER_KEY)
        return json.loads(record) if record else None
    except (OSError, ValueError, RuntimeError):  # a missing or damaged file: loading the weights will say so
        return None


def _upgrade_v1(meta: dict[str, Any]) -> dict[str, Any]:
    """Version 1 recorded every preprocessing field but the resize mode, and evaluated by squashing; the data
    and split lived in the training config."""
    config = meta.get("config", {})
    return {
        **meta,
        "format": FORMAT_V2,
        "preprocess": {**meta["preprocess"], "resize_mode": "squash"},
        "data": {"spec": config.get("data"), "val_fraction": config.get("val_fraction", 0.1), "split_seed": 0},
    }


def _upgrade_v2(meta: dict[str, Any]) -> dict[str, Any]:
    """Version 2 recorded the configured val_fraction, which digits ignored: it always held out 20%."""
    data = meta["data"]
    if data.get("spec") == "digits":
        data = {**data, "val_fraction": 0.2}
    return {**meta, "format": FORMAT, "data": data}


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, meta).

    ``model.preprocess`` is the checkpoint's own record, exactly as training used it.
    """
    from vitkit.models import create_model
    from vitkit.weights import load_weights

    meta = read_meta(path)
    model = create_model(meta["model"], num_classes=len(meta["class_names"]), **meta.get("model_args", {}))
    load_weights(model, Path(meta["_folder"]) / meta["weights"])
    model.preprocess = Preprocess.from_dict(meta["preprocess"])
    model.class_names = meta["class_names"]
    return model.eval(), meta


def load_state(folder: Path) -> dict[str, Any]:
    path = folder / "last.state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"Nothing to resume in {folder}: no last.state.pt; start without --resume.")
    return torch.load(path, map_location="cpu", weights_only=True)
