"""Keras 3 weights files (``.weights.h5``, and the ``model.weights.h5`` inside a ``.keras`` zip) into a vitkit
model built as Keras builds it (``mobilevit_xxs_keras``).

Keras names a layer by its kind and a session-wide counter (``conv2d``, ``conv2d_1``, ...), so a name says
what a layer is and when it was created, not where it sits. A functional model creates its layers in the
order its code calls them, which is the order the vitkit family declares its modules in; layers of each
kind are therefore matched to modules of that kind in order. The counters' offset (a session that built
another model first starts at ``conv2d_40``) does not matter, only their order. Every shape is checked.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vitkit.models.layers import Attention

KERAS_SUFFIXES = (".h5", ".keras")


def is_keras_file(path: str | Path) -> bool:
    return str(path).endswith(KERAS_SUFFIXES)


def read_keras_layers(path: str | Path) -> dict[str, dict[str, list[np.ndarray]]]:
    """{kind: [variables of each layer of that kind, in creation order]}; MultiHeadAttention's variables are
    keyed by sub-layer (query_dense/0, ...)."""
    try:
        import h5py
    except ImportError:
        raise ImportError(
            "Reading Keras weights files needs h5py: pip install 'vitkit[keras]' (or pip install h5py)."
        ) from None
    path = Path(path)
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                source = io.BytesIO(archive.read("model.weights.h5"))
        else:
            source = path
        with h5py.File(source, "r") as f:
            if "layers" not in f:
                raise ValueError(f"{path} holds no Keras 3 layer weights (no 'layers' group); is it a Keras 3 file?")
            layers = {}
            for name, group in f["layers"].items():
                found = {}
                group.visititems(
                    lambda key, item: (
                        found.__setitem__(key, np.asarray(item)) if isinstance(item, h5py.Dataset) else None
                    )
                )
                if found:
                    layers[name] = found
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable Keras weights file ({e}).") from None
    by_kind: dict[str, list] = {}
    for name in sorted(layers, key=_creation_order):
        by_kind.setdefault(_kind(name), []).append(layers[name])
    return by_kind


def _kind(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def _creation_order(name: str) -> tuple[str, int]:
    match = re.match(r"^(.*?)(?:_(\d+))?$", name)
    return match[1], int(match[2]) if match[2] else 0


def keras_state_dict(model: nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """The file's weights under the vitkit names of ``model``, matched kind by kind in creation order."""
    layers = read_keras_layers(path)
    slots = {"conv2d": [], "depthwise_conv2d": [], "batch_normalization": [], "layer_normalization": [],
             "dense": [], "multi_head_attention": []}  # fmt: skip
    attention_linears = set()
    for name, module in model.named_modules():
        if isinstance(module, Attention):
            slots["multi_head_attention"].append((name, module))
            attention_linears |= {id(module.qkv), id(module.proj)}
        elif isinstance(module, nn.Conv2d):
            slots["depthwise_conv2d" if module.groups > 1 else "conv2d"].append((name, module))
        elif isinstance(module, nn.BatchNorm2d):
            slots["batch_normalization"].append((name, module))
        elif isinstance(module, nn.LayerNorm):
            slots["layer_normalization"].append((name, module))
        elif isinstance(module, nn.Linear) and id(module) not in attention_linears:
            slots["dense"].append((name, module))
    unknown = sorted(set(layers) - set(slots) - {"rescaling"})
    if unknown:
        raise ValueError(f"{path} has Keras layers vitkit does not map ({', '.join(unknown)}).")
    state = {}
    for kind, modules in slots.items():
        found = layers.get(kind, [])
        if len(found) != len(modules):
            raise ValueError(
                f"{path} has {len(found)} {kind} layers where {type(model).__name__} has {len(modules)}; "
                "is it the same network (mobilevit_xxs_keras for the keras.io MobileViT example)?"
            )
        for (name, module), variables in zip(modules, found):
            state.update({f"{name}.{k}": v for k, v in _convert(kind, variables, module).items()})
    return state


def _convert(kind: str, v: dict[str, np.ndarray], module: nn.Module) -> dict[str, torch.Tensor]:
    t = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in v.items()}
    if kind == "conv2d":  # kernel [kh, kw, in, out] -> [out, in, kh, kw]
        out = {"weight": t["vars/0"].permute(3, 2, 0, 1)}
        return out | ({"bias": t["vars/1"]} if "vars/1" in t else {})
    if kind == "depthwise_conv2d":  # kernel [kh, kw, in, 1] -> [in, 1, kh, kw]
        out = {"weight": t["vars/0"].permute(2, 3, 0, 1)}
        return out | ({"bias": t["vars/1"]} if "vars/1" in t else {})
    if kind == "batch_normalization":  # gamma, beta, moving mean, moving variance
        names = ("weight", "bias", "running_mean", "running_var")
        return {n: t[f"vars/{i}"] for i, n in enumerate(names)}
    if kind == "layer_normalization":
        return {"weight": t["vars/0"], "bias": t["vars/1"]}
    if kind == "dense":  # kernel [in, out] -> [out, in]
        return {"weight": t["vars/0"].T, "bias": t["vars/1"]}
    # MultiHeadAttention: query/key/value kernels [d, heads, key_dim], biases [heads, key_dim]; the output
    # kernel [heads, key_dim, d] -> vitkit's fused qkv [3 * heads * key_dim, d] and proj [d, heads * key_dim]
    d = module.qkv.in_features
    qkv = [t[f"{p}_dense/vars/0"].reshape(d, -1).T for p in ("query", "key", "value")]
    qkv_bias = [t[f"{p}_dense/vars/1"].reshape(-1) for p in ("query", "key", "value")]
    proj = t["output_dense/vars/0"].reshape(-1, d).T
    return {"qkv.weight": torch.cat(qkv), "qkv.bias": torch.cat(qkv_bias), "proj.weight": proj,
            "proj.bias": t["output_dense/vars/1"]}  # fmt: skip
