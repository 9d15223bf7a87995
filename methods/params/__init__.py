"""Every method's hyperparameters and their checks, importable without torch.

The CLI builds and checks the hyperparameters of every method of a sweep before it imports
torch or touches data (see mtlbench/hyperparams.py), so they live here rather than next to each
method's torch code: `common` holds what every method's Params share (MethodSpec, the empty
Params, value checks), each other module a family of methods with its `*_SPECS`, which this
package joins into METHOD_SPECS. Each method module imports its Params class from here, and
`register_method` checks that a registered class agrees with `METHOD_SPECS` (name, Params,
gradient need), so the two cannot drift apart.

Each Params class has `check(method, task_names)`, the method's own rules (ranges, choices,
readable files), raising a one-line UserError; field types and finiteness are checked for every
field generically (mtlbench.hyperparams.check_fields).

Each Params class also declares `search_space`, what `mtlbench tune` searches for the method:
{field: the values tried}, a ClassVar, so it is no field of the dataclass and no part of a run's
identity. It sits next to the defaults it must contain and the check its values must pass
(tests/test_tuning.py checks both for every method), and a plugin declares its own the same way.
The settings every method shares (learning rate, weight decay) are searched too, from one grid
for all methods: mtlbench.tuning.SHARED_SPACE. Where a value's source is the authors' own
configuration it is cited; "ours" marks a grid around the default that no author gives.
"""

from mtlbench.methods.params.common import (
    WEIGHT_SCALES,
    GradientNeed,
    MethodSpec,
    NoHyperparameters,
    WeightScale,
    is_number,
    positive_number,
)
from mtlbench.methods.params.static import (
    SINGLE_TASK,
    STATIC_SOURCES,
    STATIC_SPECS,
    DeepChestFixedParams,
    StaticParams,
)
from mtlbench.methods.params.core import (
    CAGRAD_RESCALES,
    CORE_SPECS,
    DEEPCHEST_INITS,
    DEEPCHEST_SIGNALS,
    GRADNORM_OPTIMIZERS,
    MGDA_NORMALIZATIONS,
    PARAMS_ADDED_LATER,
    CAGradParams,
    DeepChestParams,
    DWAParams,
    FAMOParams,
    GradDropParams,
    GradNormParams,
    MGDAParams,
    RLWParams,
    Signal,
    UncertaintyParams,
    authors_initial_weights,
    read_task_values,
    stl_accuracies,
)
from mtlbench.methods.params.gradient_balancing import (
    GRADIENT_BALANCING_SPECS,
    FairGradParams,
    GradNormAuthorsParams,
    GradVacParams,
)
from mtlbench.methods.params.gramian_weighting import GRAMIAN_WEIGHTING_SPECS
from mtlbench.methods.params.loss_level import LOSS_LEVEL_SPECS, DBMTLParams, ExcessMTLParams, STCHParams

# In registration order (methods/catalog.py): `--methods all` and `mtlbench list` follow it.
METHOD_SPECS: dict[str, MethodSpec] = {
    **CORE_SPECS,
    **STATIC_SPECS,
    **LOSS_LEVEL_SPECS,
    **GRADIENT_BALANCING_SPECS,
    **GRAMIAN_WEIGHTING_SPECS,
}

__all__ = [
    "CAGRAD_RESCALES",
    "authors_initial_weights",
    "CORE_SPECS",
    "DEEPCHEST_INITS",
    "DEEPCHEST_SIGNALS",
    "GRADIENT_BALANCING_SPECS",
    "GRADNORM_OPTIMIZERS",
    "METHOD_SPECS",
    "PARAMS_ADDED_LATER",
    "SINGLE_TASK",
    "MGDA_NORMALIZATIONS",
    "WEIGHT_SCALES",
    "CAGradParams",
    "DBMTLParams",
    "DeepChestFixedParams",
    "DWAParams",
    "DeepChestParams",
    "ExcessMTLParams",
    "FAMOParams",
    "FairGradParams",
    "GradDropParams",
    "GradNormAuthorsParams",
    "GradNormParams",
    "GradVacParams",
    "GradientNeed",
    "MGDAParams",
    "MethodSpec",
    "NoHyperparameters",
    "RLWParams",
    "STATIC_SOURCES",
    "STATIC_SPECS",
    "StaticParams",
    "STCHParams",
    "Signal",
    "UncertaintyParams",
    "WeightScale",
    "is_number",
    "positive_number",
    "read_task_values",
    "stl_accuracies",
]
