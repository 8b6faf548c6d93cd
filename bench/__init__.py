"""Benchmarks: each subject runs as a real process; results are ratios against peers measured in the same run."""
