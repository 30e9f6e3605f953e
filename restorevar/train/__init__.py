"""Trainers: plain functions with typed configs, a metrics callback and self-describing, resumable checkpoints.

Library code: no ray, mlflow or dvc. ``pipelines/`` runs these under Ray Tune and logs to MLflow.
"""
