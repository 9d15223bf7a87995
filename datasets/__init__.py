"""Datasets (installed as mtlbench.datasets): one module per dataset; `catalog` registers them all."""
