"""Datasets (installed as mtlbench.datasets).

`base` is the contract (a loader takes a DataRequest and returns train/val/test Splits of uint8
images and 0/1 labels in TASK_NAMES order); one module per dataset (cxr14_synth, nih_cxr14,
chestmnist) plus what they share: the NIH on-disk layout and tables, image decoding, the
memory-mapped image cache, split checks; `catalog` registers them all.

Imports: numpy, PIL, pandas, torchxrayvision's tables, `mtlbench.errors`/`paths`/`owned`; never
torch's training code, methods or the results database.
"""
