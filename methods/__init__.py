"""Weighting methods (installed as mtlbench.methods): one module per method; `catalog` registers them all."""
