"""Data: the embedded synthetic benchmark, manifests, the paired dataset, real-dataset and weight fetching."""
