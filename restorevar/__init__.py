"""RestoreVAR: all-in-one image restoration with visual autoregressive modelling."""

__version__ = "0.1.0"
