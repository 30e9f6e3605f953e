"""Metrics with explicit protocols, per-image results, evaluation of methods, and cost measurement."""
from restorevar.metrics.iqa import FULL_REFERENCE, HIGHER_IS_BETTER, KNOWN, NO_REFERENCE, MetricSuite
from restorevar.metrics.protocol import MetricProtocol
from restorevar.metrics.results import COLUMNS, read_results, summary, write_rows

__all__ = ["COLUMNS", "FULL_REFERENCE", "HIGHER_IS_BETTER", "KNOWN", "NO_REFERENCE", "MetricProtocol",
           "MetricSuite", "read_results", "summary", "write_rows"]
