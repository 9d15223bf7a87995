"""The method contract: what a weighting strategy sees each step and what it returns.

A method is one of two shapes (see ../shared/DESIGN.md):

* loss-weighting (`needs = "losses"`): `step(ctx)` returns task weights w ∈ R^T and, when it
  needs more than Σ_t w_t L_t (e.g. a regulariser), the scalar objective itself; the trainer
  does one backward of it.
* gradient-manipulating (`needs` one of "shared_params", "shared_features",
  "last_shared_layer"): the trainer puts the per-task gradients (T × P, detached) in
  `ctx.grads` and the method returns either `shared_grad`, the aggregated gradient in the same
  space (P,), or only weights (e.g. GradNorm, which uses the last layer's gradients to update
  its weights and then trains with Σ_t w_t L_t).

Task heads always receive the gradient of their own loss; methods only decide what the
shared trunk receives. Methods own their state (trailing-underscore attributes), may own
learnable parameters (`parameters()`), and get per-epoch statistics in `end_epoch`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any, ClassVar, Sequence

import torch

from mtlbench import hyperparams
from mtlbench.methods.params import GradientNeed, NoHyperparameters, WeightNormalization

__all__ = ["EpochStats", "GradientNeed", "Method", "NoHyperparameters", "StepContext", "StepOutput",
           "WeightNormalization"]


@dataclass(frozen=True)
class StepContext:
    """What a method sees at one training step."""

    losses: torch.Tensor  # (T,) per-task mean losses of the batch, still attached to the graph
    step: int  # global step, 0-based
    epoch: int  # 0-based
    grads: torch.Tensor | None = None  # (T, P) per-task gradients in the space of `needs`


@dataclass(frozen=True)
class StepOutput:
    """What a method returns at one step.

    `weights` (T,) are always given (detached; logged). With `shared_grad` the trainer
    applies that gradient to the shared part; otherwise it backpropagates `objective`, or
    Σ_t w_t L_t when `objective` is None.
    """

    weights: torch.Tensor
    objective: torch.Tensor | None = None
    shared_grad: torch.Tensor | None = None


@dataclass(frozen=True)
class EpochStats:
    """Per-task statistics of one finished epoch, in task order (numpy-free, plain tensors)."""

    epoch: int
    train_loss: torch.Tensor  # (T,) mean per-task training loss over the epoch
    train_accuracy: torch.Tensor  # (T,) accuracy at the decision threshold, in train mode
    val_loss: torch.Tensor  # (T,)
    val_accuracy: torch.Tensor  # (T,)
    val_auroc: torch.Tensor  # (T,), NaN where a task has one class in validation


class Method:
    """Base of every weighting method; subclasses set the class attributes and `step`."""

    name: ClassVar[str] = ""  # set by register_method
    description: ClassVar[str] = ""
    needs: ClassVar[GradientNeed] = "losses"
    normalization: ClassVar[WeightNormalization] = "sum-to-T"
    Params: ClassVar[type] = NoHyperparameters

    def __init__(
        self,
        task_names: Sequence[str],
        params: Any = None,
        *,
        generator: torch.Generator | None = None,
    ):
        self.task_names = tuple(task_names)
        self.num_tasks = len(self.task_names)
        self.params = params if params is not None else self.Params()
        hyperparams.check_params(self.params, self.label(), self.task_names)  # types, finiteness, own rules
        # A method's own randomness (e.g. RLW, PCGrad) never touches the data-order RNG.
        self.generator_ = generator if generator is not None else torch.Generator().manual_seed(0)

    @classmethod
    def label(cls) -> str:
        """The registered name (the class name for an unregistered method), for messages."""
        return cls.name or cls.__name__.lower()

    @classmethod
    def make_params(cls, overrides: dict[str, Any] | None) -> Any:
        """Build the Params dataclass from defaults and `overrides`, rejecting unknown keys and wrong types."""
        return hyperparams.make_params(cls.Params, overrides, cls.label())

    def hyperparameters(self) -> dict[str, Any]:
        """The method's hyperparameters as a plain dict (recorded in the run config)."""
        return asdict(self.params)

    def to(self, device: torch.device) -> "Method":
        """Move the method's tensors to `device` (no-op unless it holds tensors)."""
        return self

    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters the trainer optimizes alongside the model (none by default)."""
        return []

    def step(self, ctx: StepContext) -> StepOutput:
        """Weights (and objective or shared gradient) for one training step."""
        raise NotImplementedError

    def end_epoch(self, stats: EpochStats) -> None:
        """Per-epoch update hook (no-op by default)."""

    def diagnostics(self) -> dict[str, float]:
        """Counters the method wants stored with the run (e.g. guarded NaN/zero-gradient events)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The method's state (its trailing-underscore attributes) for a checkpoint.

        Tensors are copied (on their device), a generator is saved as its state, an optimizer as
        its state_dict and a dataclass as a dict of its fields: everything that
        `torch.load(weights_only=True)` reads back.
        """
        return {name: _to_saved(value) for name, value in vars(self).items() if name.endswith("_")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved; learnable parameters keep their identity (an optimizer holds them)."""
        missing = sorted(set(self.state_dict()) ^ set(state))
        if missing:
            raise ValueError(f"{type(self).__name__} state does not match: {', '.join(missing)}")
        for name, saved in state.items():
            setattr(self, name, _from_saved(getattr(self, name), saved))

    def weights_changed_per_step(self) -> bool:
        """True if weights change every step (then the trainer logs them per step)."""
        return bool(self.parameters())


def _to_saved(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, torch.optim.Optimizer):
        return value.state_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_saved(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_to_saved(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_saved(v) for k, v in value.items()}
    return value


def _from_saved(current: Any, saved: Any) -> Any:
    """`saved` in the form of `current` (on its device); updated in place where identity matters."""
    if isinstance(current, torch.Tensor):
        if current.is_leaf and current.requires_grad:  # a learnable tensor an optimizer refers to
            with torch.no_grad():
                current.copy_(saved)
            return current
        return saved.to(current.device)
    if isinstance(current, torch.Generator):
        current.set_state(saved)
        return current
    if isinstance(current, torch.optim.Optimizer):
        current.load_state_dict(saved)
        return current
    if is_dataclass(current) and not isinstance(current, type):
        return type(current)(**{f.name: _from_saved(getattr(current, f.name), saved[f.name]) for f in fields(current)})
    return saved
