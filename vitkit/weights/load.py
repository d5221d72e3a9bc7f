"""``load_weights``: read a weights file safely, recognise where it comes from, convert, load."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from vitkit.weights.keras import is_keras_file, keras_state_dict
from vitkit.weights.rename import IGNORED_KEYS, StateDict, rename_keys

# containers that training scripts wrap state dicts in
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "state_dict_ema", "model_ema")


@dataclass
class LoadResult:
    source: str  # which format the weights were recognised as
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    head_skipped: str = ""  # why the classifier was left as initialised, if it was

    def __str__(self) -> str:
        text = f"loaded {self.source} weights"
        return text + (f"; {self.head_skipped}" if self.head_skipped else "")


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors from .safetensors, or from .pt/.pth/.bin/.ckpt with ``weights_only=True`` (never unpickles code).

    A folder (``save_pretrained`` output) is searched for model.safetensors or pytorch_model.bin.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth"):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise FileNotFoundError(f"{path} is a folder without model.safetensors or pytorch_model.bin; pass the file.")
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}; check the path.")
    if is_keras_file(path):
        raise ValueError(
            f"{path} is a Keras weights file: load it into its model with vitkit.load_weights(model, path) "
            "(mobilevit_xxs_keras for the keras.io MobileViT example)."
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e}); re-download or re-export it.") from None
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":  # torch.save's zip archive, or a legacy pickle
        raise ValueError(
            f"{path} is not a PyTorch weights file (neither torch.save's zip archive nor a pickle); "
            "give a .safetensors, .pt, .pth, .bin or .ckpt file."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} holds pickled Python objects besides tensors, and vitkit never unpickles code: "
            "re-save it with torch.save(model.state_dict(), ...) or as .safetensors."
        ) from None
    except RuntimeError as e:
        raise ValueError(f"{path} is not a PyTorch weights file ({e}).") from None
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj, what: str = "the checkpoint") -> StateDict:
    """Find the tensor dict inside a training checkpoint and drop DataParallel's ``module.`` prefix."""
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            raise ValueError(f"{what} holds no state dict (found keys: {', '.join(list(obj)[:8])}).")
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} is a {type(obj).__name__}, not a state dict of tensors.")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def load_weights(
    model: nn.Module,
    weights: str | Path | Mapping[str, torch.Tensor],
    strict: bool = True,
    bgr_to_rgb: bool = False,
) -> LoadResult:
    """Load weights from vitkit, timm, transformers, ml-cvnets or Keras 3 (``.weights.h5`` / ``.keras``, into
    a model built as Keras builds it) into a vitkit model.

    The format is recognised from the key names. A classifier of another size than the model's (1000
    ImageNet classes into a 5-class model, say) is skipped and left as initialised, for fine-tuning.
    With ``strict`` any other missing or unexpected key raises ``ValueError`` naming the keys.

    ``bgr_to_rgb``: Apple's MobileViT weights (ml-cvnets, transformers ``apple/mobilevit-*``) were trained
    on BGR images. Reversing the first conv's input channels makes the model take RGB like every vitkit
    pipeline, at no run-time cost. Off by default so the logits equal the source model's on the same tensor.
    """
    sources = getattr(type(model), "weight_sources", None)  # declared by each model family, beside its code
    if sources is None:
        raise TypeError(f"load_weights takes a vitkit model, got {type(model).__name__}.")
    keras = not isinstance(weights, Mapping) and is_keras_file(weights)
    if keras:
        if not getattr(type(model), "keras_layout", False):
            raise ValueError(
                f"{weights} is a Keras weights file, which loads only into a model built as Keras builds it "
                f"(mobilevit_xxs_keras, for the keras.io MobileViT example), not {model.name}."
            )
        weights = keras_state_dict(model, weights)  # under vitkit's names, matched layer by layer
    elif not isinstance(weights, Mapping):
        weights = read_state_dict(weights)
    state_dict = {k: v for k, v in unwrap_state_dict(weights).items() if not IGNORED_KEYS.search(k)}
    if keras:
        sources = {"keras": []}

    target = model.state_dict()
    target_keys = {k for k in target if not IGNORED_KEYS.search(k)}
    head_keys = {k for k in target_keys if k.startswith("head.")}
    body_keys = target_keys - head_keys
    # the format whose renamed keys cover most of the model's body wins
    candidates = {name: rename_keys(state_dict, rules) for name, rules in sources.items()}
    source, converted = max(candidates.items(), key=lambda item: len(body_keys & item[1].keys()))
    if len(body_keys & converted.keys()) < len(body_keys) / 2:
        formats = ", ".join(sources)
        raise ValueError(
            f"These {len(state_dict)} weights (e.g. {next(iter(state_dict), 'none')}) cover less than half of "
            f"{model.name} in any known format ({formats}); are they from another architecture?"
        )

    result = LoadResult(source=source)
    mismatched = [k for k in converted if k in target and converted[k].shape != target[k].shape]
    if any(k in head_keys for k in mismatched):
        result.head_skipped = (
            f"classifier not loaded: the weights have {converted['head.weight'].shape[0]} classes, "
            f"the model {model.num_classes}"
        )
        converted = {k: v for k, v in converted.items() if k not in head_keys}
        mismatched = [k for k in mismatched if k not in head_keys]
    if mismatched:
        shapes = "; ".join(f"{k}: {tuple(converted[k].shape)} vs {tuple(target[k].shape)}" for k in mismatched[:5])
        raise ValueError(f"The {source} weights do not fit {model.name} ({shapes}); build the matching preset.")

    result.missing = sorted(target_keys - converted.keys())
    result.unexpected = sorted(converted.keys() - target_keys)
    if result.missing and set(result.missing) <= head_keys and not result.head_skipped:
        result.head_skipped = "classifier not in the weights: left as initialised"
    if strict and (set(result.missing) - head_keys or result.unexpected):
        raise ValueError(
            f"The {source} weights do not match {model.name}: "
            f"missing {_preview(sorted(set(result.missing) - head_keys))}; unexpected {_preview(result.unexpected)}. "
            "Pass strict=False to load the rest."
        )

    if bgr_to_rgb and model.first_conv in converted:
        converted[model.first_conv] = converted[model.first_conv].flip(1)
    model.load_state_dict(converted, strict=False)
    return result


def _preview(keys: list[str], n: int = 6) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
