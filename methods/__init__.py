"""Weighting methods (installed as mtlbench.methods).

`base` is the contract every method follows (read its docstring first), `params` holds every
built-in method's hyperparameters and spec without torch, `gramian` the shared machinery of the
methods that work on the T×T Gramian, and each other module one method with its paper and
equations; `catalog` imports them all, which registers them.

Imports: torch, `mtlbench.registry`, `mtlbench.spaces`, `mtlbench.hyperparams`, `mtlbench.errors`;
never training, data or report code (a method sees only its StepContext and EpochStats).
"""
