"""Baselines the paper compares RestoreVAR with, written from their papers (PromptIR)."""
