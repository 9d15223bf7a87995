"""The method contract: what a weighting strategy sees each step and what it returns.

A method is a subclass of `Method` registered with `mtlbench.registry.register_method(name)`
(built-in methods) or published through the `mtlbench.methods` entry-point group (a user's own
package; see the README's "Adding a method"). Its declaration — `needs`, `Params`,
`weight_scale`, `syncs_host`, `version` — is, for a built-in method, its MethodSpec in
methods/params/ (the one source: `register_method` sets them on the class), and for a plugin
its class attributes. They are:

* `needs`: the gradient space it works in (mtlbench/spaces.py): "losses" (loss weighting: the
  method sees only the per-task losses), "shared_params", "shared_features" or
  "last_shared_layer" (the trainer puts the per-task gradients, (T, P), detached, in
  `StepContext.grads`);
* `Params`: a dataclass of its hyperparameters with their defaults (the authors' values) and a
  `check(method, task_names)` that refuses bad values with a one-line UserError; field types
  and finiteness are checked for every field. Built-in Params live in methods/params/ so
  that the CLI checks them before it imports torch;
* `version`: part of every run's identity; bump it when the method's math or a default changes;
* `weight_scale`: how its weights are scaled ("sum-to-T", "none", "learned", "no-weights"), for the report;
* `syncs_host`: False when `step` never reads a tensor's value on the host (checked);
* `reevaluates`: True when the method wants the batch's losses again after the update
  (`after_update`, FAMO's same-batch logit step); the extra forward is counted in its time.

Each step's StepContext also holds the batch's correct predictions per task (`correct`, (T,)), for a
method whose weights follow training accuracy within an epoch, and, on a dataset with missing labels,
how many images of the batch have a label per task (`labelled`). A task with no labelled image in the
batch has a loss of 0 and no gradient that step: a method must not read that 0 as a loss (log, ratio,
regulariser) nor move that task's state for it (see `StepContext.present`).

Each step the method returns a StepOutput with any of: task weights w (T,) (logged; None for an
aggregator that has none), an objective to backpropagate (e.g. with a regulariser), or a
shared gradient (P,) in its space. The trainer backpropagates the objective, else Σ_t w_t L_t;
with a shared gradient the heads get their own losses' gradients and the trunk the aggregate.

State is torch's, created in `setup()`: a Method is a `torch.nn.Module`. Tensors that are state
are registered buffers (`register_buffer`), learnable tensors are `nn.Parameter`s, so `to(device)`,
`state_dict()` and `load_state_dict()` are torch's own. Attributes whose names end in "_" and
that are not tensors — a `torch.Generator`, a `torch.optim` optimizer the method runs itself,
plain Python counters — are saved as the module's extra state (like any module's, `state_dict()`
holds the live buffers: write it out at once, as the trainer's checkpoint does, or deep-copy it).
A method's learnable
parameters are trained by the run's optimizer with the groups from `optimizer_groups()`
(no weight decay; the method's own learning rate if it sets one). A method's randomness comes
from `self.generator_` only, never the global RNG.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Sequence

import torch

from mtlbench import hyperparams, spaces
from mtlbench.methods.params import GradientNeed, NoHyperparameters, WeightScale

__all__ = ["EpochStats", "GradientNeed", "Method", "NoHyperparameters", "StepContext", "StepOutput", "WeightScale"]


@dataclass(frozen=True)
class StepContext:
    """What a method sees at one training step."""

    losses: torch.Tensor  # (T,) per-task mean losses of the batch, still attached to the graph
    step: int  # global step, 0-based
    epoch: int  # 0-based
    grads: torch.Tensor | None = None  # (T, P) per-task gradients in the space of `needs`
    # The space's tensors themselves (detached), in the order of the columns of `grads`: their
    # shapes unflatten a row, their values are e.g. GradDrop's activations. None for "losses".
    space_tensors: tuple[torch.Tensor, ...] | None = None
    # (T,) int64 on the losses' device: the batch's correct predictions per task (P(present) > 0.5; with two
    # logits, their argmax), as the epoch's training accuracy counts them. None where a caller builds the
    # context without a batch's predictions (tests).
    correct: torch.Tensor | None = None
    # (T,) int64 on the losses' device: the batch's images that have a label per task, on a dataset with
    # missing labels; None where every image has every label. A task with 0 has a loss of 0 with no
    # gradient this step (its weight applies to nothing): see `present`.
    labelled: torch.Tensor | None = None

    def present(self) -> torch.Tensor | None:
        """(T,) bool: tasks with at least one labelled image in the batch; None when all are."""
        return None if self.labelled is None else self.labelled > 0


# Re-evaluation of the step's batch at the updated parameters: the (T,) per-task losses, no graph.
Reevaluate = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class StepOutput:
    """What a method returns at one step.

    `weights` (T,) are the factors on each task's loss or gradient the method applied (detached;
    logged), None for an aggregator without task weights (e.g. GradDrop). With `shared_grad` the
    trainer applies that gradient to the shared part; otherwise it backpropagates `objective`, or
    Σ_t w_t L_t when `objective` is None. At least one of the three is given.
    """

    weights: torch.Tensor | None = None
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
    # (T,) the epoch's training images with a label per task, on a dataset with missing labels; None where every
    # image has every label. There a statistic is NaN for a task without a label (train: in the epoch; val: in the
    # split), and a method must leave that task's state alone rather than read the NaN.
    labelled: torch.Tensor | None = None


class Method(torch.nn.Module):
    """Base of every weighting method; subclasses set the class attributes and `step`."""

    name: ClassVar[str] = ""  # set by register_method
    description: ClassVar[str] = ""
    needs: ClassVar[GradientNeed] = "losses"
    weight_scale: ClassVar[WeightScale] = "sum-to-T"
    Params: ClassVar[type] = NoHyperparameters
    version: ClassVar[int] = 1
    syncs_host: ClassVar[bool] = True
    reevaluates: ClassVar[bool] = False

    def __init__(
        self,
        task_names: Sequence[str],
        params: Any = None,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.task_names = tuple(task_names)
        self.num_tasks = len(self.task_names)
        self.params = params if params is not None else self.Params()
        hyperparams.check_params(self.params, self.label(), self.task_names)  # types, finiteness, own rules
        # A method's own randomness (e.g. RLW, PCGrad) never touches the data-order RNG.
        self.generator_ = generator if generator is not None else torch.Generator().manual_seed(0)
        self.prepare()
        self.setup()

    def prepare(self) -> None:
        """Create the state a family of methods shares (GramianMethod's event counters,
        JacobianStateMethod's buffers): called by `__init__` just before `setup`. A family's base
        class overrides this, so that its methods' `setup` need not remember to call super()."""

    def setup(self) -> None:
        """Create the method's state (buffers, parameters, counters): called once by `__init__`, after
        `params` (checked), `task_names`, `num_tasks` and `generator_` are set and `prepare` ran. A
        method overrides this, not `__init__`; one that extends another method's state calls
        `super().setup()` first."""

    @classmethod
    def label(cls) -> str:
        """The registered name (the class name for an unregistered method), for messages."""
        return cls.name or cls.__name__.lower()

    @classmethod
    def space(cls) -> spaces.GradientSpace:
        """The gradient space the method declared (`needs`)."""
        return spaces.space(cls.needs)

    @classmethod
    def make_params(cls, overrides: dict[str, Any] | None) -> Any:
        """Build the Params dataclass from defaults and `overrides`, rejecting unknown keys and wrong types."""
        return hyperparams.make_params(cls.Params, overrides, cls.label())

    def hyperparameters(self) -> dict[str, Any]:
        """The method's hyperparameters as a plain dict (recorded in the run config)."""
        return asdict(self.params)

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Parameter groups the run's optimizer adds for this method (torch.optim group dicts).

        By default all of its `nn.Parameter`s in one group without weight decay, at the run's
        learning rate; a method with its own learning rate sets "lr", and a method that trains
        its parameters itself (with its own optimizer) returns [].
        """
        params = list(self.parameters())
        return [{"params": params, "weight_decay": 0.0}] if params else []

    def step(self, ctx: StepContext) -> StepOutput:
        """Weights (and objective or shared gradient) for one training step."""
        raise NotImplementedError

    def after_update(self, ctx: StepContext, reevaluate: Reevaluate) -> None:
        """Called after the optimizer step when `reevaluates` is True, with the step's context;
        `reevaluate()` returns the same batch's per-task losses at the updated parameters."""

    def end_epoch(self, stats: EpochStats) -> None:
        """Per-epoch update hook (no-op by default)."""

    def bind_training_labels(self, labels: torch.Tensor) -> None:
        """Called once before a run's first step, fresh or resumed, with the training split's labels (N, T) on
        the CPU: for a method whose weights come from the data (e.g. `static`'s inverse prevalence). A method
        must derive the same values from the same labels every time (no-op by default)."""

    def diagnostics(self) -> dict[str, float]:
        """Counters the method wants stored with the run (e.g. guarded NaN/zero-gradient events)."""
        return {}

    def weights_changed_per_step(self) -> bool:
        """True if weights change every step (then the trainer logs them per step)."""
        return any(True for _ in self.parameters())

    def get_extra_state(self) -> dict[str, Any]:
        """The state that is not a buffer or parameter: attributes named with a trailing "_".

        A generator is saved as its state, an optimizer as its state_dict, anything else as a
        deep copy (plain Python values: what `torch.load(weights_only=True)` reads back).
        """
        state = {}
        for name, value in vars(self).items():
            if not name.endswith("_"):
                continue
            if isinstance(value, torch.Tensor):
                raise TypeError(
                    f"{type(self).__name__}.{name} is a tensor but not a registered buffer or "
                    "parameter: register it (self.register_buffer) so that to() and checkpoints see it"
                )
            if isinstance(value, torch.Generator):
                state[name] = value.get_state()
            elif isinstance(value, torch.optim.Optimizer):
                state[name] = value.state_dict()
            else:
                state[name] = copy.deepcopy(value)
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `get_extra_state` saved (a generator and an optimizer in place)."""
        expected = {name for name in vars(self) if name.endswith("_")}
        if set(state) != expected:
            raise ValueError(
                f"{type(self).__name__} extra state does not match: {', '.join(sorted(set(state) ^ expected))}"
            )
        for name, saved in state.items():
            current = getattr(self, name)
            if isinstance(current, torch.Generator):
                current.set_state(saved)
            elif isinstance(current, torch.optim.Optimizer):
                current.load_state_dict(saved)
            else:
                setattr(self, name, copy.deepcopy(saved))
