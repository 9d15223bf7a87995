"""mtlbench: a benchmark of multi-task task-weighting strategies on chest X-ray classification."""

__version__ = "0.1.0"
