"""Data: ``--data`` specs, image decoding, downloads and batched augmentation."""

from vitkit.data.sources import DataListing, DataSplits, ImageSet, Records, list_data, load_splits

__all__ = ["DataListing", "DataSplits", "ImageSet", "Records", "list_data", "load_splits"]
