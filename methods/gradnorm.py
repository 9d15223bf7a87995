"""GradNorm: learn task weights that balance the tasks' gradient norms at the last shared layer.

Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
Networks", ICML 2018. With W the last shared layer (`model.last_shared_layer()`) and w_t the
task weights (initially 1):

    G_W^(t) = ‖∇_W w_t L_t‖ = w_t ‖∇_W L_t‖,      Ḡ_W = mean_t G_W^(t),
    L̃_t = L_t / L_t(0),                          r_t = L̃_t / mean_j L̃_j,
    L_grad = Σ_t | G_W^(t) − Ḡ_W · r_t^α |,        α = 1.5,

the target Ḡ_W · r_t^α held constant (no gradient flows through it). Each step the model trains
with Σ_t w_t L_t (the weights before this step's update), then w takes one step on L_grad and
is renormalized so that Σ_t w_t = T (weight_scale "sum-to-T"). L_t(0) are the losses of the
first step.

The per-task norms ‖∇_W L_t‖ are the row norms of `ctx.grads` (the trainer's per-task
gradients with respect to W), so no extra backward is needed. w is updated inside the method by
its own optimizer — Adam with lr 0.025 by default (scale-free: ∂L_grad/∂w_t = ±‖∇_W L_t‖,
whose magnitude depends on the layer), or plain SGD — so `optimizer_groups()` is empty and the
run's optimizer never sees w (an `nn.Parameter` of the module, so it moves and checkpoints with it).

Where lr 0.025 comes from. The GradNorm authors released no code, and the value could not be
checked against the paper's text here. The source is AuxiLearn's GradNorm baseline (Navon et
al., ICLR 2021; AvivNavon/AuxiLearn @17495d6c064718606ccf3a97d9c244eea084633f,
experiments/nyuv2/trainer_baseline.py, lines 68–70: `weights_lr = 0.025` with the log line "For
GradNorm the default lr for weights is 0.025, like in the GradNorm paper"; lines 166–172: an
Adam parameter group of its own for w beside the model's lr 1e-4, NYUv2, α = 1.5, w renormalized
to sum to T in experiments/weight_methods.py, lines 139–142). Unlike here, a StepLR schedule there
halves it with the model's lr after 100 of 200 epochs. LibMTL (median-research-group/LibMTL
@4336804847eaa5e0b924b743d76beec7ac3fdc97, LibMTL/weighting/GradNorm.py) has no such value: it
learns logits of T·softmax(·) with the model's own optimizer (LibMTL/trainer.py line 144; `--lr`
1e-4 by default, LibMTL/config.py line 26), a different parametrization whose step size does not
carry over. The value is an exposed hyperparameter (`--param gradnorm.lr=…`, shown by
`mtlbench list`); it was set for NYUv2's 3 dense tasks, not 14 binary findings, so tune it for a
protocol before drawing conclusions about GradNorm.

Missing labels: a task without a labelled image in the batch has no loss and no gradient. Its L_t(0) is
taken at the first step where it has a label (per task), and a step's L̃, r_t, Ḡ_W and L_grad are over the
present tasks (the T'-task problem). The absent tasks' weights and their optimizer moments are left as they
were, and the present tasks' weights are renormalized to the total they held, so Σ_t w_t = T still.

Guards (deviations): weights are floored at `min_weight` before renormalizing (the paper has no
floor; a negative weight would flip a task's loss); a step whose gradient norms or losses are
not finite leaves w unchanged (counted in `diagnostics()`).
"""

from __future__ import annotations


import torch

from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.registry import register_method


def inverse_training_rates(losses: torch.Tensor, initial_losses: torch.Tensor) -> torch.Tensor:
    """r_t = L̃_t / mean_j L̃_j with L̃_t = L_t / L_t(0)."""
    ratio = losses / initial_losses.clamp(min=torch.finfo(initial_losses.dtype).tiny)
    return ratio / ratio.mean()


def gradnorm_loss(weights: torch.Tensor, grad_norms: torch.Tensor, rates: torch.Tensor, alpha: float) -> torch.Tensor:
    """L_grad = Σ_t |w_t ‖∇_W L_t‖ − const(mean_j w_j ‖∇_W L_j‖ · r_t^α)|, differentiable in w."""
    norms = weights * grad_norms
    target = (norms.mean() * rates.pow(alpha)).detach()
    return (norms - target).abs().sum()


def renormalized(weights: torch.Tensor, total: float, floor: float) -> torch.Tensor:
    """Weights floored at `floor`, then scaled to sum to `total`."""
    w = weights.clamp(min=floor)
    return w * (total / w.sum())


@register_method("gradnorm")
class GradNorm(Method):
    """GradNorm: weights learned every step from the last shared layer's gradient norms."""

    description = "GradNorm (Chen et al. 2018): learn weights equalizing gradient norms at the last shared layer."

    def setup(self) -> None:
        p = self.params
        self.weights_ = torch.nn.Parameter(torch.ones(self.num_tasks, dtype=torch.float64))
        opt = torch.optim.Adam if p.optimizer == "adam" else torch.optim.SGD
        self.optimizer_ = opt([self.weights_], lr=p.lr)  # w is trained here, not by the run's optimizer
        self.register_buffer("initial_losses_", torch.full((self.num_tasks,), torch.nan, dtype=torch.float64))  # L_t(0)
        self.events_ = {"nonfinite_grad_rows": 0, "zero_grad_rows": 0, "skipped_weight_updates": 0}

    def step(self, ctx: StepContext) -> StepOutput:
        """Return the current weights for Σ w_t L_t, then update them on L_grad."""
        if ctx.grads is None:
            raise ValueError("GradNorm needs the last shared layer's per-task gradients in ctx.grads")
        used = self.weights_.detach().clone()
        losses = ctx.losses.detach().to(self.weights_)
        grad_norms = ctx.grads.detach().norm(dim=1).to(self.weights_)
        present = ctx.present()
        self._update(losses, grad_norms, None if present is None else present.to(self.weights_.device))
        return StepOutput(weights=used.to(device=ctx.losses.device, dtype=ctx.losses.dtype))

    def _update(self, losses: torch.Tensor, grad_norms: torch.Tensor, present: torch.Tensor | None = None) -> None:
        finite = torch.isfinite(grad_norms)
        self.events_["nonfinite_grad_rows"] += int((~finite).sum())
        self.events_["zero_grad_rows"] += int((grad_norms == 0).sum())
        if not (bool(finite.all()) and bool(torch.isfinite(losses).all())):
            self.events_["skipped_weight_updates"] += 1
            return
        if present is not None:
            self._update_present(losses, grad_norms, present)
            return
        if bool(torch.isnan(self.initial_losses_).all()):  # the first usable step
            self.initial_losses_.copy_(losses)
        rates = inverse_training_rates(losses, self.initial_losses_)
        loss = gradnorm_loss(self.weights_, grad_norms, rates, self.params.alpha)
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()
        with torch.no_grad():
            self.weights_.copy_(renormalized(self.weights_, float(self.num_tasks), self.params.min_weight))

    def _update_present(self, losses: torch.Tensor, grad_norms: torch.Tensor, present: torch.Tensor) -> None:
        """The weight update among the present tasks (missing labels); the absent ones' state is left alone."""
        if not bool(present.any()):
            return
        first = torch.isnan(self.initial_losses_) & present  # the task's first step with a label
        self.initial_losses_.copy_(torch.where(first, losses, self.initial_losses_))
        rows, absent = present.nonzero().squeeze(1), ~present
        rates = inverse_training_rates(losses[rows], self.initial_losses_[rows])
        before = self.weights_.detach().clone()
        state = self.optimizer_.state[self.weights_]
        moments = {k: v.clone() for k, v in state.items() if torch.is_tensor(v) and v.shape == before.shape}
        loss = gradnorm_loss(self.weights_[rows], grad_norms[rows], rates, self.params.alpha)
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer_.step()
        for k, v in state.items():  # an absent task's moments as before (0 where the optimizer had none yet)
            if torch.is_tensor(v) and v.shape == before.shape:
                v.copy_(torch.where(absent, moments.get(k, torch.zeros_like(v)), v))
        with torch.no_grad():
            w = torch.where(absent, before, self.weights_)
            total = float(self.num_tasks) - float(before[absent].sum())
            w[rows] = renormalized(w[rows], total, self.params.min_weight)
            self.weights_.copy_(w)

    def optimizer_groups(self) -> list[dict]:
        """None: GradNorm trains its weights itself, on L_grad."""
        return []

    def weights_changed_per_step(self) -> bool:
        """GradNorm's weights change every step."""
        return True

    def diagnostics(self) -> dict[str, float]:
        """Guard counters: NaN/inf and zero gradient rows seen, weight updates skipped."""
        return {name: float(count) for name, count in self.events_.items()}
