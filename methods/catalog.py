"""Importing this module registers every weighting method (the registry imports it on first lookup).

`mtlbench list` and `--methods all` follow the order of registration: the baseline first, then
loss-weighting methods, then gradient-manipulating methods.
"""

# isort: skip_file
from mtlbench.methods import ew  # noqa: F401  (registration side effects)
from mtlbench.methods import deepchest  # noqa: F401

# loss-weighting methods

# gradient methods
