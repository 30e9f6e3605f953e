"""Paired statistics over per-image results: thin wrappers over scipy and statsmodels.

Import from the modules (``restorevar.stats.paired``, ``.compare``, ``.weighted``, ``.seeds``): the package
itself imports nothing, so the CLI's ``regress`` does not load scipy.
"""
