"""vitkit: from a folder of labelled images to a small, fast image classifier on a phone."""

from vitkit.inference import evaluate, predict
from vitkit.models import Preprocess, create_model, list_models
from vitkit.training import TrainConfig, train
from vitkit.weights import load_weights

__version__ = "0.1.0"

__all__ = [
    "Preprocess",
    "TrainConfig",
    "create_model",
    "evaluate",
    "list_models",
    "load_weights",
    "predict",
    "train",
    "__version__",
]
