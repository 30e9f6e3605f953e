"""Paired statistics over per-image results: thin wrappers over scipy and statsmodels."""
from restorevar.stats.compare import compare_methods, holm
from restorevar.stats.paired import PairedResult, paired_test
from restorevar.stats.weighted import WeightedResult, dataset_weighted_test

__all__ = ["PairedResult", "WeightedResult", "compare_methods", "dataset_weighted_test", "holm", "paired_test"]
