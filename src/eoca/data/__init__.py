"""Data model: dataset spec, validation, loading, import of user files, real data sets."""

from eoca.data.dataset import SPLITS, Dataset, load_spec
from eoca.data.resolve import open_dataset
from eoca.data.schema import EVENT_TYPES, DatasetSpec, FeatureSpec, SplitSpec, TableSpec

__all__ = [
    "EVENT_TYPES",
    "SPLITS",
    "Dataset",
    "DatasetSpec",
    "FeatureSpec",
    "SplitSpec",
    "TableSpec",
    "load_spec",
    "open_dataset",
]
