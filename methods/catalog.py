"""Importing this module registers every weighting method (the registry imports it on first lookup).

`mtlbench list` and `--methods all` follow the order of registration: the baseline first, then
loss-weighting methods, then gradient-manipulating methods.
"""

# isort: skip_file
from mtlbench.methods import ew  # noqa: F401  (registration side effects)
from mtlbench.methods import deepchest  # noqa: F401

# loss-weighting methods
from mtlbench.methods import uncertainty  # noqa: F401
from mtlbench.methods import dwa  # noqa: F401
from mtlbench.methods import rlw  # noqa: F401
from mtlbench.methods import famo  # noqa: F401
from mtlbench.methods import static  # noqa: F401  (static weights: the baseline)
from mtlbench.methods import stl  # noqa: F401  (single-task learning: one run per task, `run --stl`)
from mtlbench.methods import deepchest_fixed  # noqa: F401  (DeepChest's final weights, static)
from mtlbench.methods import gls  # noqa: F401
from mtlbench.methods import imtl_l  # noqa: F401
from mtlbench.methods import stch  # noqa: F401

# gradient methods
from mtlbench.methods import mgda  # noqa: F401  (registers mgda and mgda-ub)
from mtlbench.methods import pcgrad  # noqa: F401
from mtlbench.methods import cagrad  # noqa: F401
from mtlbench.methods import gradnorm  # noqa: F401
from mtlbench.methods import graddrop  # noqa: F401  (no task weights: a sign-consistent aggregate)
from mtlbench.methods import db_mtl  # noqa: F401
from mtlbench.methods import excess_mtl  # noqa: F401
from mtlbench.methods import fairgrad  # noqa: F401
from mtlbench.methods import config  # noqa: F401
from mtlbench.methods import gradvac  # noqa: F401
from mtlbench.methods import gradnorm_authors  # noqa: F401  (what the DeepChest authors called GradNorm)
from mtlbench.methods import imtl_g  # noqa: F401
from mtlbench.methods import nash_mtl  # noqa: F401
from mtlbench.methods import aligned_mtl  # noqa: F401
from mtlbench.methods import upgrad  # noqa: F401
from mtlbench.methods import dualproj  # noqa: F401
