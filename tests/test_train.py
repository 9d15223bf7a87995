"""The trainer: fairness across methods, the gradient-method contract, failures recorded."""

import copy
from dataclasses import dataclass, replace

import pytest
import torch

import mtlbench.training.factories as factories_mod
import mtlbench.training.loop as train_mod
from mtlbench.config import build_config
from mtlbench.methods.base import Method, StepContext, StepOutput
from mtlbench.model import ModelSpec, MultiTaskNet, per_task_losses
from mtlbench.registry import METHODS
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES
from mtlbench.training import train_run, training_step
from tests.tiny_model import tiny_model

CFG = replace(build_config("smoke"), device="cpu", epochs=2, batch_size=16, synth_images=50)


@dataclass
class SpyParams:
    scale: float = 1.0


def spy_class(needs="losses", shared=False, weights_value=1.0):
    """A method that records what it saw; weights `weights_value`, or Σ_t g_t as a shared gradient."""

    class Spy(Method):
        description = "test spy"
        Params = SpyParams
        seen: list = []

        def step(self, ctx: StepContext) -> StepOutput:
            type(self).seen.append(
                (ctx.step, ctx.losses.detach().clone(), None if ctx.grads is None else ctx.grads.shape)
            )
            w = torch.full_like(ctx.losses.detach(), weights_value)
            if shared:
                return StepOutput(weights=w, shared_grad=ctx.grads.sum(0))
            return StepOutput(weights=w)

    Spy.needs = needs
    Spy.seen = []
    return Spy


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as s:
        yield s


def _register(monkeypatch, name, cls):
    METHODS.names()  # load the catalog first so the patch is not overwritten
    monkeypatch.setitem(METHODS.entries, name, cls)


def test_same_seed_same_init_and_batches_for_every_method(monkeypatch, store, toy_bundle):
    batches = {}
    real = train_mod.epoch_batches

    def recording(*args, **kwargs):
        for x, y in real(*args, **kwargs):
            batches.setdefault(current[0], []).append((x.clone(), y.clone()))
            yield x, y

    monkeypatch.setattr(train_mod, "epoch_batches", recording)
    a, b = spy_class(weights_value=1.0), spy_class(weights_value=0.3)
    _register(monkeypatch, "spy-a", a)
    _register(monkeypatch, "spy-b", b)
    current = ["spy-a"]
    train_run(replace(CFG, method="spy-a", seed=5), toy_bundle, store, {}, model_factory=tiny_model)
    current[0] = "spy-b"
    train_run(replace(CFG, method="spy-b", seed=5), toy_bundle, store, {}, model_factory=tiny_model)
    # identical initial weights and first batch ⇒ identical losses at step 0
    assert torch.equal(a.seen[0][1], b.seen[0][1])
    # afterwards the weighting differs, so the losses do
    assert not torch.equal(a.seen[-1][1], b.seen[-1][1])
    # every batch identical, in order, for both methods
    steps = CFG.epochs * (len(toy_bundle.train.labels) // CFG.batch_size)
    assert len(batches["spy-a"]) == len(batches["spy-b"]) == steps
    for (xa, ya), (xb, yb) in zip(batches["spy-a"], batches["spy-b"]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_other_seed_changes_init(monkeypatch, store, toy_bundle):
    a = spy_class()
    _register(monkeypatch, "spy-a", a)
    train_run(replace(CFG, method="spy-a", seed=1), toy_bundle, store, {}, model_factory=tiny_model)
    train_run(replace(CFG, method="spy-a", seed=2), toy_bundle, store, {}, model_factory=tiny_model)
    first = [s for s in a.seen if s[0] == 0]
    assert not torch.equal(first[0][1], first[1][1])


@pytest.mark.parametrize("needs", ["shared_params", "shared_features"])
def test_gradient_method_summing_task_gradients_equals_ew(monkeypatch, store, toy_bundle, needs):
    """A gradient method returning Σ_t ∇L_t must train exactly like EW (same seed, SGD)."""
    spy = spy_class(needs=needs, shared=True)
    _register(monkeypatch, "sum-grads", spy)
    cfg = replace(CFG, optimizer="sgd", epochs=1, select="last")
    ew = train_run(replace(cfg, method="ew"), toy_bundle, store, {}, model_factory=tiny_model)
    sg = train_run(replace(cfg, method="sum-grads"), toy_bundle, store, {}, model_factory=tiny_model)
    assert sg.status == "complete", sg.detail
    assert spy.seen[0][2][0] == 14  # T rows of per-task gradients
    assert sg.test_auroc == pytest.approx(ew.test_auroc, abs=1e-4)
    rows = store.query("SELECT run_id, task, loss FROM metrics WHERE split='test' ORDER BY task, run_id")
    by_run = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r["loss"])
    ew_loss, sg_loss = by_run[ew.run_id], by_run[sg.run_id]
    assert ew_loss == pytest.approx(sg_loss, rel=1e-3)


def test_non_finite_loss_is_stored_as_diverged_and_sweep_goes_on(monkeypatch, store, toy_bundle):
    _register(monkeypatch, "nan-w", spy_class(weights_value=float("nan")))
    bad = train_run(replace(CFG, method="nan-w"), toy_bundle, store, {}, model_factory=tiny_model)
    assert bad.status == "diverged"
    row = store.query("SELECT status, diverged_step FROM runs WHERE run_id=?", (bad.run_id,))[0]
    assert row["status"] == "diverged" and row["diverged_step"] == 1  # NaN weights → NaN params after step 0
    good = train_run(replace(CFG, method="ew"), toy_bundle, store, {}, model_factory=tiny_model)
    assert good.status == "complete"


def test_exception_in_a_method_is_recorded_as_failed(monkeypatch, store, toy_bundle):
    class Broken(Method):
        description = "raises"

        def step(self, ctx):
            raise RuntimeError("boom")

    _register(monkeypatch, "broken", Broken)
    out = train_run(replace(CFG, method="broken"), toy_bundle, store, {}, model_factory=tiny_model)
    assert out.status == "failed" and "boom" in out.detail
    assert store.query("SELECT error FROM runs WHERE run_id=?", (out.run_id,))[0]["error"].startswith(
        "RuntimeError: boom"
    )


def test_complete_run_stores_metrics_weights_costs(store, toy_bundle):
    out = train_run(
        replace(CFG, method="deepchest"), toy_bundle, store, {"torch": torch.__version__}, model_factory=tiny_model
    )
    assert out.status == "complete"
    counts = {
        t: store.query(f"SELECT COUNT(*) AS n FROM {t} WHERE run_id=?", (out.run_id,))[0]["n"]
        for t in ("metrics", "weights", "costs")
    }
    # train + val per epoch, test once; 14 tasks each
    assert counts["metrics"] == 14 * (2 * CFG.epochs + 1)
    assert counts["weights"] == 14 * CFG.epochs
    assert counts["costs"] == 1
    cost = store.query("SELECT * FROM costs WHERE run_id=?", (out.run_id,))[0]
    assert cost["peak_cuda_mb"] is None and cost["device"] == "cpu"
    steps = CFG.epochs * (len(toy_bundle.train.labels) // CFG.batch_size)  # every step of every epoch, timed
    assert cost["images_per_s"] == pytest.approx(steps * CFG.batch_size / cost["train_s"], rel=1e-12)
    assert cost["wall_s"] >= cost["train_s"] + cost["eval_s"] and 0 < cost["median_step_s"] <= cost["train_s"]
    # no bound from the process's VmHWM read afterwards: the kernel updates its high-water mark lazily, so a
    # later read can be below an earlier one (seen: 825.191 after 825.195 MiB)
    assert cost["peak_rss_mb"] > 0
    assert cost["median_step_cpu_s"] > 0 and 0 <= cost["other_load"] <= 1  # process CPU time; others' share
    # unreliable follows the other load (1 from LOADED_SHARE on); a run this short may be unknown, and says so
    from mtlbench.machine_load import LOADED_SHARE

    if cost["unreliable"] is None:
        assert cost["unreliable_reason"].startswith("unknown: training too short")
    else:
        assert cost["unreliable"] == (cost["other_load"] >= LOADED_SHARE)
        assert (cost["unreliable_reason"] is None) == (not cost["unreliable"])
    run = store.query("SELECT * FROM runs WHERE run_id=?", (out.run_id,))[0]
    assert run["weight_normalization"] == "none" and run["selected_epoch"] in (0, 1)
    # predictions carry each image's patient, for the report's patient-clustered bootstrap
    for split in ("val", "test"):
        ids = store.predictions(out.run_id, split)[0]
        part = getattr(toy_bundle, split)
        assert ids == list(map(str, part.image_ids))
        assert store.patient_ids(out.run_id, split) == list(map(str, part.patient_ids))


def test_frozen_trunk_trains_only_the_heads(store, toy_bundle, monkeypatch):
    """--freeze-trunk: trunk weights and BatchNorm statistics stay at their seeded initial values."""
    kept = {}
    real = factories_mod.MultiTaskNet

    class Recording(real):
        def __init__(self, spec):
            super().__init__(spec)
            kept["model"], kept["init"] = self, copy.deepcopy(self.state_dict())

    monkeypatch.setattr(factories_mod, "MultiTaskNet", Recording)
    out = train_run(replace(CFG, method="uncertainty", freeze_trunk=True, select="last"), toy_bundle, store, {})
    assert out.status == "complete", out.detail
    final = kept["model"].state_dict()
    trunk = [k for k in final if k.startswith("trunk.")]
    assert trunk and all(torch.equal(final[k], kept["init"][k]) for k in trunk)
    assert not torch.equal(final["heads.linear.weight"], kept["init"]["heads.linear.weight"])


def test_heads_get_their_own_loss_gradient_whatever_the_shared_aggregate(toy_bundle):
    """A gradient method decides only the trunk's gradient: heads get ∇ of their own loss."""

    class ZeroShared(Method):
        needs = "shared_params"

        def step(self, ctx):
            return StepOutput(weights=torch.full((14,), 5.0), shared_grad=torch.zeros(ctx.grads.shape[1]))

    class NoStep:
        def zero_grad(self, set_to_none=True):
            model.zero_grad(set_to_none=set_to_none)

        def step(self):
            pass

    torch.manual_seed(0)
    model = MultiTaskNet(ModelSpec(14, "bce")).double().train()
    x = torch.randn(8, 1, 32, 32, dtype=torch.float64)
    y = (torch.rand(8, 14) < 0.3).double()
    training_step(
        model, ZeroShared(TASK_NAMES), NoStep(), x, y, replace(CFG, grad_engine="loop"), 0, 0, torch.device("cpu")
    )
    applied = [p.grad.clone() for p in model.head_parameters()]
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.shared_parameters())
    _, logits = model(x)
    expected = torch.autograd.grad(per_task_losses(logits, y, "bce").sum(), model.head_parameters())
    for a, e in zip(applied, expected):
        assert torch.allclose(a, e, atol=1e-12)


@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_jacobian_is_freed_before_the_update_and_old_gradients_before_the_jacobian(engine):
    """A gradient method never holds the (T, P) Jacobian, the previous gradients and the optimizer
    update at once: memory at its floor."""
    import weakref

    seen = {}

    class Holder(Method):
        needs = "shared_params"

        def step(self, ctx):
            seen["jacobian"] = weakref.ref(ctx.grads)
            seen["old_grads"] = [p.grad for p in model.parameters() if p.grad is not None]
            return StepOutput(weights=torch.ones(14), shared_grad=ctx.grads.sum(0))

    class CheckingSGD(torch.optim.SGD):
        def step(self, closure=None):
            seen["alive_at_update"] = seen["jacobian"]() is not None
            return super().step(closure)

    torch.manual_seed(0)
    model = MultiTaskNet(ModelSpec(14, "bce")).train()
    optimizer = CheckingSGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 1, 32, 32), (torch.rand(4, 14) < 0.3).float()
    for step in range(2):
        training_step(
            model, Holder(TASK_NAMES), optimizer, x, y, replace(CFG, grad_engine=engine), step, 0, torch.device("cpu")
        )
        assert seen["alive_at_update"] is False
        assert seen["old_grads"] == []  # the previous step's .grad were released before the Jacobian


def test_step_timer_times_steps_and_the_method_part_on_cpu():
    import time

    from mtlbench.costs import StepTimer

    timer = StepTimer(torch.device("cpu"))
    for with_method in (True, False):
        timer.start()
        if with_method:
            timer.method_start()
            time.sleep(0.02)
            timer.method_end()
        time.sleep(0.01)
        timer.end()
    steps, method, cpu = timer.collect()
    assert steps[0] >= 0.03 and steps[1] >= 0.01 and steps[0] > method[0] >= 0.02 and method[1] == 0.0
    assert len(cpu) == 2 and all(0 <= c < 0.01 for c in cpu)  # asleep: wall time passes, CPU time hardly
    assert timer.collect() == ([], [], [])


def test_augment_eval_scores_augmented_images_with_the_same_draws_at_every_evaluation(toy_bundle):
    from mtlbench.batches import DeviceSplit
    from mtlbench.training.evaluation import evaluate

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = tiny_model(CFG, 14, cpu)
    split = DeviceSplit.from_split(toy_bundle.val, cpu)
    plain = evaluate(model, split, replace(CFG, augment="paper"), cpu)[1]
    authors = replace(CFG, augment="paper", augment_eval=True)
    first, again = evaluate(model, split, authors, cpu)[1], evaluate(model, split, authors, cpu)[1]
    assert (first == again).all() and not (first == plain).all()
    other_seed = evaluate(model, split, replace(authors, seed=1), cpu)[1]
    assert not (other_seed == first).all()  # the draws follow the run's seed


def with_missing_labels(bundle, fraction: float = 0.3, seed: int = 0, unlabelled_task: int = 13):
    """`bundle` with a seeded `fraction` of its labels NaN, and task `unlabelled_task` never labelled."""
    import numpy as np

    rng = np.random.default_rng(seed)
    splits = {}
    for name, split in bundle.splits().items():
        labels = split.labels.astype(np.float32)
        labels[rng.random(labels.shape) < fraction] = np.nan
        labels[:, unlabelled_task] = np.nan
        splits[name] = replace(split, labels=labels)
    return replace(bundle, **splits)


@pytest.mark.parametrize("method", ["deepchest", "dwa", "uncertainty", "mgda"])
def test_a_run_with_missing_labels_trains_on_labelled_images_only(store, toy_bundle, method):
    import numpy as np

    data = with_missing_labels(toy_bundle)
    out = train_run(replace(CFG, method=method), data, store, {"torch": torch.__version__}, model_factory=tiny_model)
    assert out.status == "complete"
    diagnostics = {
        r["name"]: r["value"] for r in store.query("SELECT * FROM diagnostics WHERE run_id=?", (out.run_id,))
    }
    steps = CFG.epochs * (len(data.train) // CFG.batch_size)
    assert diagnostics["unlabelled_task_steps"] >= steps  # task 13 is unlabelled at every step
    train_sql = "SELECT * FROM metrics WHERE run_id=? AND split='train' AND task=?"
    train = store.query(train_sql, (out.run_id, TASK_NAMES[13]))
    assert len(train) == CFG.epochs and all(r["loss"] is None for r in train)  # no labelled image: no mean
    labelled = store.query(train_sql, (out.run_id, TASK_NAMES[0]))
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in labelled)
    test = {r["task"]: r for r in store.query("SELECT * FROM metrics WHERE run_id=? AND split='test'", (out.run_id,))}
    assert test[TASK_NAMES[13]]["auroc"] is None and test[TASK_NAMES[0]]["auroc"] is not None
    _, labels, _ = store.predictions(out.run_id, "test")
    assert labels.dtype == np.float32 and np.array_equal(np.isnan(labels), np.isnan(data.test.labels))
