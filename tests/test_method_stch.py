"""STCH: the smooth Tchebycheff limits, the warm-up and nadir, gradients as weights, state, the authors' loop."""

import io
import math
from dataclasses import replace

import pytest
import torch

from mtlbench.config import build_config
from mtlbench.conformance import Harness, check_method
from mtlbench.errors import UserError
from mtlbench.methods.base import StepContext
from mtlbench.methods.params import STCHParams
from mtlbench.methods.stch import STCH, smooth_tchebycheff, stch_weights
from mtlbench.model import per_task_losses
from mtlbench.results.store import ResultsStore
from tests.authors_loop import twin_run
from mtlbench.training import train_run
from tests.tiny_model import tiny_model

TASKS = ("a", "b", "c", "d")
VALUES = torch.tensor([0.3, -1.2, 0.9, 0.1], dtype=torch.float64)


def losses(*values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("mu", [1e-3, 0.1, 1.0, 10.0])
def test_smooth_tchebycheff_lies_between_the_max_and_the_max_plus_mu_log_T(mu):
    g = smooth_tchebycheff(VALUES, mu).item()
    top = VALUES.max().item()
    assert top <= g <= top + mu * math.log(4) + 1e-12


def test_small_mu_approaches_the_max_and_large_mu_the_mean():
    assert smooth_tchebycheff(VALUES, 1e-4).item() == pytest.approx(VALUES.max().item(), abs=1e-3)
    mu = 1e5  # g_μ = μ·log T + mean + O(1/μ)
    assert smooth_tchebycheff(VALUES, mu).item() - mu * math.log(4) == pytest.approx(VALUES.mean().item(), abs=1e-4)


def test_warmup_objective_is_the_sum_of_log_losses_and_weights_its_gradient():
    m = STCH(TASKS)
    x = losses(0.5, 0.2, 1.5, 0.05, grad=True)
    out = m.step(StepContext(x, 0, 0))
    assert out.objective.item() == pytest.approx(sum(math.log(v) for v in x.tolist()), rel=1e-12)
    out.objective.backward()
    assert x.grad.tolist() == pytest.approx([1 / v for v in x.tolist()], rel=1e-12)
    assert out.weights.tolist() == pytest.approx(x.grad.tolist(), rel=1e-12)
    assert m.loss_count_.tolist() == [0.0] * 4  # epoch 0 < W = 4: no nadir estimate yet


def warmed_up(warmup=1, batches=((0.4, 0.2, 1.0, 0.1), (0.6, 0.4, 2.0, 0.3))) -> STCH:
    m = STCH(TASKS, STCHParams(mu=0.5, warmup_epochs=warmup))
    for k, batch in enumerate(batches):
        m.step(StepContext(losses(*batch), k, warmup))  # the last warm-up epoch averages
    return m


def test_the_last_warmup_epoch_averages_the_losses_into_the_nadir_point():
    m = warmed_up()
    assert m.nadir_.tolist() == pytest.approx([0.5, 0.3, 1.5, 0.2], rel=1e-12)
    assert m.loss_count_.tolist() == [2.0] * 4  # batches seen, per task
    m.step(StepContext(losses(5.0, 5.0, 5.0, 5.0), 2, 2))  # later epochs leave it alone
    assert m.nadir_.tolist() == pytest.approx([0.5, 0.3, 1.5, 0.2], rel=1e-12)


def test_after_the_warmup_the_objective_is_T_times_stch_of_the_normalised_log_losses():
    m = warmed_up()
    nadir = [0.5, 0.3, 1.5, 0.2]
    x = losses(0.25, 0.6, 1.5, 0.05, grad=True)
    out = m.step(StepContext(x, 10, 2))
    shifted = [math.log(v / n) for v, n in zip(x.tolist(), nadir)]
    by_hand = 4 * 0.5 * math.log(sum(math.exp(s / 0.5) for s in shifted))
    assert out.objective.item() == pytest.approx(by_hand, rel=1e-10)
    out.objective.backward()
    assert out.weights.tolist() == pytest.approx(x.grad.tolist(), rel=1e-10)
    soft = [math.exp(s / 0.5) for s in shifted]
    assert out.weights.tolist() == pytest.approx([4 * p / sum(soft) / v for p, v in zip(soft, x.tolist())], rel=1e-10)


def test_the_task_furthest_above_its_nadir_gets_the_largest_share_and_small_mu_all_of_it():
    x = losses(0.25, 0.6, 1.5, 0.05)
    nadir = losses(0.5, 0.3, 1.5, 0.2)  # log(L/n): −0.69, +0.69, 0, −1.39
    share = stch_weights(x, nadir, 1.0) * x / 4  # the softmax, up to the 1e-20
    assert int(share.argmax()) == 1
    assert (stch_weights(x, nadir, 1e-3) * x / 4).tolist() == pytest.approx([0, 1, 0, 0], abs=1e-12)
    flat = stch_weights(x, nadir, 1e6) * x  # large μ: uniform softmax, weights 1/L as in the warm-up
    assert flat.tolist() == pytest.approx([1.0] * 4, rel=1e-5)


def test_gradient_equals_the_authors_max_shifted_form():
    """The authors subtract the (detached) max before exp: another value, the same gradient."""
    nadir = losses(0.5, 0.3, 1.5, 0.2)
    a, b = losses(0.25, 0.6, 1.5, 0.05, grad=True), losses(0.25, 0.6, 1.5, 0.05, grad=True)
    (4 * smooth_tchebycheff(torch.log(a / nadir + 1e-20), 0.3)).backward()
    shifted = torch.log(b / nadir + 1e-20)
    (0.3 * torch.log(torch.sum(torch.exp((shifted - shifted.detach().max()) / 0.3))) * 4).backward()
    assert a.grad.tolist() == pytest.approx(b.grad.tolist(), rel=1e-12)


def test_matches_torchjd_stch_with_unit_preferences_and_the_log_nadir_as_reference():
    scalarization = pytest.importorskip("torchjd.scalarization")
    nadir = losses(0.5, 0.3, 1.5, 0.2)
    m = warmed_up()
    a, b = losses(0.25, 0.6, 1.5, 0.05, grad=True), losses(0.25, 0.6, 1.5, 0.05, grad=True)
    ours = m.step(StepContext(a, 0, 2)).objective
    reference = scalarization.STCH(0.5, weights=torch.ones(4, dtype=torch.float64), reference=nadir.log())
    theirs = 4 * reference(torch.log(b))
    (ours + theirs).backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    assert a.grad.tolist() == pytest.approx(b.grad.tolist(), rel=1e-12)


def test_checkpoint_in_the_averaging_epoch_continues_identically():
    m = STCH(TASKS, STCHParams(warmup_epochs=1))
    gen = torch.Generator().manual_seed(0)
    batches = [torch.rand(4, generator=gen, dtype=torch.float64) + 0.1 for _ in range(6)]
    for k in range(3):
        m.step(StepContext(batches[k], k, 1))
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    restored = STCH(TASKS, STCHParams(warmup_epochs=1))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for k in range(3, 6):
        epoch = 1 if k == 3 else 2
        a, b = m.step(StepContext(batches[k], k, epoch)), restored.step(StepContext(batches[k], k, epoch))
        assert torch.equal(a.weights, b.weights) and torch.equal(a.objective, b.objective)
    assert torch.equal(m.nadir_, restored.nadir_)
    assert m.nadir_.tolist() == pytest.approx(torch.stack(batches[:4]).mean(0).tolist(), rel=1e-12)


class ShortWarmupSTCH(STCH):
    """STCH with one warm-up epoch, so that the conformance harness's 4 epochs reach the STCH phase."""

    def __init__(self, task_names, params=None, *, generator=None):
        super().__init__(task_names, params or STCHParams(warmup_epochs=1), generator=generator)


def test_the_stch_phase_conforms_too():
    assert Harness(ShortWarmupSTCH).steps // Harness(ShortWarmupSTCH).epoch_every > 2  # epochs 0, 1 and then STCH
    check_method(ShortWarmupSTCH)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(mu=0.0), "mu"),
        (dict(mu=-1.0), "mu"),
        (dict(mu=float("inf")), "mu"),
        (dict(warmup_epochs=-1), "warmup_epochs"),
        (dict(warmup_epochs=1.5), "warmup_epochs"),
        (dict(warmup_epochs=True), "warmup_epochs"),
    ],
)
def test_bad_hyperparameters_are_user_errors(params, message):
    with pytest.raises(UserError, match=message):
        STCH(TASKS, STCHParams(**params))


def test_defaults_are_the_authors():
    assert STCHParams() == STCHParams(mu=1.0, warmup_epochs=4)


def test_training_steps_equal_the_authors_loop():
    """Six steps through the trainer (2 per epoch, W = 1) equal Xi-L/STCH's STCH.backward written out:
    Σ log(L + 1e-20) in epochs 0 and 1 (averaging the losses in epoch 1), then T·μ·log Σ exp((l − max l)/μ)."""
    run = twin_run(STCH, steps=6)
    method = STCH(tuple("abcde"), STCHParams(mu=0.5, warmup_epochs=1))
    run.train_ours(method, epoch_of=lambda step: step // 2)

    batches, theirs, opt = run.batches, run.theirs, run.their_optimizer()
    total, count, nadir = 0.0, 0, None
    for k, (x, y) in enumerate(batches):
        epoch = k // 2
        batch_losses = per_task_losses(theirs(x)[1], y, "bce")
        opt.zero_grad()
        if epoch <= 1:
            if epoch == 1:
                total, count = total + batch_losses.detach(), count + 1
            torch.log(batch_losses + 1e-20).sum().backward()
        else:
            nadir = total / count if nadir is None else nadir
            logs = torch.log(batch_losses / nadir + 1e-20)
            (0.5 * torch.log(torch.sum(torch.exp((logs - logs.detach().max()) / 0.5))) * 5).backward()
        opt.step()

    assert torch.allclose(method.nadir_.float(), nadir, rtol=1e-6)
    run.assert_same_models()


def test_tiny_training_run(tmp_path, toy_bundle):
    """Three epochs with W = 1: Σ log L in epochs 0 and 1, STCH in epoch 2."""
    cfg = replace(
        build_config("smoke"), device="cpu", epochs=3, batch_size=16, method="stch", method_params={"warmup_epochs": 1}
    )
    with ResultsStore(tmp_path / "r.sqlite") as store:
        out = train_run(cfg, toy_bundle, store, {}, model_factory=tiny_model)
        assert out.status == "complete", out.detail
        rows = store.query("SELECT epoch, step, weight FROM weights WHERE run_id=? AND step >= 0", (out.run_id,))
    steps_per_epoch = len(toy_bundle.train) // 16
    assert len(rows) == 14 * 3 * steps_per_epoch
    assert all(r["weight"] > 0 and math.isfinite(r["weight"]) for r in rows)


def test_a_task_without_labels_is_left_out_of_the_nadir_and_stch_is_over_the_present_tasks():
    m = STCH(TASKS, STCHParams(mu=0.5, warmup_epochs=1))
    nan_free = [(0.4, 0.2, 1.0, 0.1), (0.6, 0.0, 2.0, 0.3)]  # batch 2: task b has no label (loss 0)
    for k, (batch, labelled) in enumerate(zip(nan_free, ([2, 2, 2, 2], [2, 0, 2, 2]))):
        out = m.step(StepContext(losses(*batch), k, 1, labelled=torch.tensor(labelled)))
    assert out.weights[1].item() == 0.0  # warm-up: 1/(L + ε) would be 1e20 for a 0
    assert m.nadir_.tolist() == pytest.approx([0.5, 0.2, 1.5, 0.2], rel=1e-12)  # b: its one labelled batch
    assert m.loss_count_.tolist() == [2.0, 1.0, 2.0, 2.0]
    x = losses(0.25, 0.0, 1.5, 0.05, grad=True)
    out = m.step(StepContext(x, 10, 2, labelled=torch.tensor([3, 0, 1, 1])))
    alone = STCH(("a", "c", "d"), STCHParams(mu=0.5, warmup_epochs=1))  # STCH on the present subset
    alone.nadir_.copy_(torch.tensor([0.5, 1.5, 0.2], dtype=torch.float64))
    y = losses(0.25, 1.5, 0.05, grad=True)
    expected = alone.step(StepContext(y, 10, 2))
    assert out.objective.item() == pytest.approx(expected.objective.item(), rel=1e-12)
    out.objective.backward()
    expected.objective.backward()
    assert x.grad[[0, 2, 3]].tolist() == pytest.approx(y.grad.tolist(), rel=1e-12) and x.grad[1].item() == 0.0
    assert out.weights.tolist() == pytest.approx(x.grad.tolist(), rel=1e-12)


def test_a_checkpoint_with_the_former_scalar_count_loads():
    m = warmed_up()
    state = m.state_dict()
    state["loss_count_"] = torch.tensor(2.0, dtype=torch.float64)  # as saved before the count was per task
    fresh = STCH(TASKS, STCHParams(mu=0.5, warmup_epochs=1))
    fresh.load_state_dict(state)
    assert fresh.loss_count_.tolist() == [2.0] * 4
