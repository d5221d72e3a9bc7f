from vitkit.weights.load import LoadResult, load_weights

__all__ = ["load_weights", "LoadResult"]
