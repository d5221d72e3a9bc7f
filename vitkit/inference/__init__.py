"""Inference without the training code: load a checkpoint, evaluate it, classify images.

``vitkit eval``, ``vitkit predict``, export, bench and the server use this package; ``vitkit.training``
imports it, never the reverse.
"""

from vitkit.inference.evaluate import EvalResult, evaluate, evaluate_model
from vitkit.inference.predict import Classifier, Prediction, predict
from vitkit.inference.runtime import load_for_inference, pick_device, prepare_for_inference

__all__ = [
    "Classifier",
    "EvalResult",
    "Prediction",
    "evaluate",
    "evaluate_model",
    "load_for_inference",
    "pick_device",
    "predict",
    "prepare_for_inference",
]
