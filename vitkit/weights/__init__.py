from vitkit.weights.load import load_weights, LoadResult
__all__ = ["load_weights", "LoadResult"]
