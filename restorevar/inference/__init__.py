"""Restoring a user's own images with a trained checkpoint."""
from restorevar.inference.restore import RestoreOptions, Restorer, find_checkpoint, list_inputs, plan_outputs

__all__ = ["RestoreOptions", "Restorer", "find_checkpoint", "list_inputs", "plan_outputs"]
