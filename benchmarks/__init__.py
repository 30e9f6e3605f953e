"""Speed and quality benchmarks with saved baselines."""
