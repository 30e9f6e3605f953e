"""Speed and quality benchmarks with saved baselines (issue 7 onwards)."""
