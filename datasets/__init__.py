"""Datasets (installed as mtlbench.datasets).

`base` is the contract (a loader takes a DataRequest and returns train/val/test Splits of uint8
images and 0/1 labels in TASK_NAMES order); one module per dataset (nih_cxr14, chestmnist) and
one package for the generated one (cxr14_synth: rng, anatomy, findings, render, writer, loader),
plus what they share: the NIH on-disk layout and tables, image decoding, the memory-mapped image
cache, split checks; `catalog` registers them all.

Imports: numpy, PIL, pandas, torchxrayvision's tables, `mtlbench.errors`/`paths`/`owned`/`atomic`;
never torch's training code, methods or the results database.
"""
