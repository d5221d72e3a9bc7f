"""Model registry: named presets, ``create_model`` and ``list_models``."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from vitkit.preprocess import Preprocess


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_cls: Callable[..., nn.Module]
    config: Any  # a frozen dataclass with an ``image_size`` field
    preprocess: Preprocess
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, model_cls, config, preprocess: Preprocess, description: str) -> None:
    assert name not in _REGISTRY, f"model {name} registered twice"
    _REGISTRY[name] = ModelSpec(name, model_cls, config, preprocess, description)


def _ensure_registered() -> None:
    """Import every module of ``vitkit.models``: each family's file registers its presets on import, so a new
    family is one new file."""
    import importlib
    import pkgutil

    import vitkit.models

    for module in pkgutil.iter_modules(vitkit.models.__path__):
        importlib.import_module(f"vitkit.models.{module.name}")


def list_models(pattern: str | None = None) -> list[str]:
    """Names of all presets, optionally filtered by a shell-style pattern such as ``"mobilevit*"``."""
    _ensure_registered()
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_model_spec(name: str) -> ModelSpec:
    _ensure_registered()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown model '{name}'.{hint} Run `vitkit models` to list the available ones.")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int | None = None, pretrained: str | None = None, **overrides) -> nn.Module:
    """Build a preset by name, e.g. ``create_model("mobilevit_xxs", num_classes=5, drop_rate=0.1)``.

    ``overrides`` replace fields of the preset's config dataclass (``image_size``, dropout rates, ...).
    ``pretrained``: a weights file or a Hugging Face Hub name (``apple/mobilevit-xx-small``,
    ``timm/mobilevitv2_100.cvnets_in1k``); the weights' classes are the default ``num_classes``, and
    ``model.class_names`` their names. The model carries ``model.name``, ``model.config`` and
    ``model.preprocess``.
    """
    if pretrained is not None:
        return _create_pretrained(name, num_classes, pretrained, overrides)
    num_classes = 1000 if num_classes is None else num_classes
    spec = get_model_spec(name)
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 builds a model without classifier), got {num_classes}.")
    fields = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)}; valid options are: {', '.join(sorted(fields))}.")
    config = dataclasses.replace(spec.config, **overrides)
    model = spec.model_cls(config, num_classes=num_classes)
    model.name = name
    model.preprocess = dataclasses.replace(spec.preprocess, input_size=config.image_size)
    return model


def _create_pretrained(name: str, num_classes: int | None, pretrained: str, overrides: dict) -> nn.Module:
    from vitkit.weights import load_weights
    from vitkit.weights.hub import check_preset, resolve

    weights = resolve(pretrained)
    check_preset(name, weights)
    classes = num_classes if num_classes is not None else (len(weights.class_names) or 1000)
    if weights.image_size and "image_size" not in overrides:  # e.g. ml-cvnets' 384x384 releases
        overrides = {**overrides, "image_size": weights.image_size}
    model = create_model(name, classes, **overrides)
    model.load_result = load_weights(model, weights.weights, bgr_to_rgb=weights.bgr)
    if weights.class_names and len(weights.class_names) == classes:
        model.class_names = weights.class_names
    return model
