"""Analyses of trained models: the scale-space swap of the paper's Fig. 2, 9 and 13."""
from restorevar.analysis.scale_space import SWAPS, scale_swap_images, swap_scales

__all__ = ["SWAPS", "scale_swap_images", "swap_scales"]
