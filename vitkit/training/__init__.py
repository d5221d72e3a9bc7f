"""Training: config and recipes, the loop, checkpoints, metrics, plots, torchrun support."""

from vitkit.training.config import TrainConfig, build_config
from vitkit.training.trainer import TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "build_config", "train"]
