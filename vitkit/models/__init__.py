"""The model zoo: MobileViT (paper and Keras-example variants) and ViT."""

from vitkit.models.fuse import fuse
from vitkit.models.registry import Preprocess, create_model, get_model_spec, list_models

__all__ = ["Preprocess", "create_model", "fuse", "get_model_spec", "list_models"]
