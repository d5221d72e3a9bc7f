"""vitkit: from a folder of labelled images to a small, fast image classifier on a phone.

The names below load on first use, so ``import vitkit`` stays light (no training code, no data sets).
"""

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Preprocess": "vitkit.preprocess",
    "TrainConfig": "vitkit.training",
    "create_model": "vitkit.models",
    "evaluate": "vitkit.inference",
    "list_models": "vitkit.models",
    "load_weights": "vitkit.weights",
    "predict": "vitkit.inference",
    "train": "vitkit.training",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'vitkit' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
