"""Data: ``--data`` specs, image decoding, downloads and batched augmentation."""

from vitkit.data.sources import DataSplits, ImageSet, load_data

__all__ = ["DataSplits", "ImageSet", "load_data"]
