"""Datasets (installed as mtlbench.datasets): one module per dataset (cxr14_synth, the generated one,
is a package of its own); `catalog` registers them all."""
