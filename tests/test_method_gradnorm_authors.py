"""gradnorm-authors: the DeepChest authors' "GradNorm" update by hand, its per-epoch counts, and their loop."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mtlbench.errors import UserError
from mtlbench.grads import per_task_gradients
from mtlbench.methods import gradnorm_authors
from mtlbench.methods.base import StepContext
from mtlbench.methods.gradnorm_authors import GradNormAuthors, authors_update
from mtlbench.methods.params import GradNormAuthorsParams
from mtlbench.plan import method_sets
from mtlbench.training.step import correct_predictions
from tests.authors_loop import twin_run

TASKS = ("a", "b", "c")
ALPHA, FLOOR = 0.12, 1e-6


def their_update(weights: list[float], norms: list[float], counts: list[int]) -> list[float]:
    """Their compute_target_gradient_norms and update_task_weights (mtl_grad_norm_trainer.py lines 39–70),
    in Python floats, from the weighted losses' gradient norms."""
    avg = sum(norms) / len(norms)
    targets = [avg * (c**ALPHA) for c in counts]
    return [max(w - ALPHA * (n - target), FLOOR) for w, n, target in zip(weights, norms, targets)]


def rows_with_norms(norms: list[float], p: int = 6) -> torch.Tensor:
    """(T, p) float64 per-task gradients whose row norms are `norms`."""
    j = torch.randn(len(norms), p, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return j / j.norm(dim=1, keepdim=True) * torch.tensor(norms, dtype=torch.float64)[:, None]


def ctx(grads: torch.Tensor, correct: list[int], step: int = 0, epoch: int = 0) -> StepContext:
    t = grads.shape[0]
    return StepContext(torch.ones(t, dtype=torch.float64), step, epoch, grads, correct=torch.tensor(correct))


def test_one_update_by_hand_with_the_floor_and_the_weights_before_it():
    """w = (1, 0.1, 2), ‖∇L‖ = (0.4, 10, 0.1) so ‖g‖ = w‖∇L‖ = (0.4, 1, 0.2), mean 8/15; counts (100, 0, 30).
    Targets (8/15)·100^0.12, 0 (a count of 0), (8/15)·30^0.12; task b: 0.1 − 0.12·1 < 0, floored at 1e-6."""
    m = GradNormAuthors(TASKS)
    m.weights_.copy_(torch.tensor([1.0, 0.1, 2.0], dtype=torch.float64))
    out = m.step(ctx(rows_with_norms([0.4, 10.0, 0.1]), [100, 0, 30]))
    mean = 1.6 / 3
    expected = [
        1.0 - 0.12 * (0.4 - mean * 100**0.12),
        1e-6,
        2.0 - 0.12 * (0.2 - mean * 30**0.12),
    ]
    assert m.weights_.tolist() == pytest.approx(expected, rel=1e-12)
    assert out.weights.tolist() == [1.0, 0.1, 2.0]  # the step trains with the weights from before the update
    assert m.weights_.tolist() == pytest.approx(their_update([1.0, 0.1, 2.0], [0.4, 1.0, 0.2], [100, 0, 30]))


def test_authors_update_is_their_arithmetic():
    w = torch.tensor([1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    norms = torch.tensor([0.2, 40.0, 0.05, 1.0], dtype=torch.float64)
    counts = torch.tensor([7.0, 1.0, 0.0, 1234.0], dtype=torch.float64)
    new = authors_update(w, norms, counts, ALPHA, FLOOR)
    assert new.tolist() == pytest.approx(their_update(w.tolist(), norms.tolist(), [7, 1, 0, 1234]), rel=1e-12)
    assert new[1].item() == FLOOR  # 3 − 0.12·(40 − 10.3125·1^0.12) < 0


def test_counts_include_the_batch_accumulate_over_the_epoch_and_restart_with_the_next():
    norms = [0.5, 1.0, 2.0]
    batches = [(0, [3, 5, 8]), (0, [4, 0, 8]), (0, [1, 2, 0]), (1, [6, 6, 6]), (1, [2, 1, 0])]
    m = GradNormAuthors(TASKS)
    weights, counts, epoch = [1.0, 1.0, 1.0], [0, 0, 0], 0
    for k, (e, correct) in enumerate(batches):
        counts = [0, 0, 0] if e != epoch else counts
        epoch = e
        counts = [c + n for c, n in zip(counts, correct)]  # this batch's count before the update
        out = m.step(ctx(rows_with_norms(norms), correct, k, e))
        assert out.weights.tolist() == pytest.approx(weights, rel=1e-12)
        weights = their_update(weights, [w * n for w, n in zip(weights, norms)], counts)
        assert m.correct_.tolist() == counts and m.weights_.tolist() == pytest.approx(weights, rel=1e-12)
    assert m.correct_.tolist() == [8, 7, 6]  # epoch 1 only


def test_the_sum_of_weights_grows_once_the_mean_count_term_exceeds_one():
    """Σ_t (‖g_t‖ − target_t) = T·mean‖g‖·(1 − mean_t C_t^α): with counts > 1 the weights' sum rises every step."""
    m = GradNormAuthors(TASKS)
    total = [m.weights_.sum().item()]
    for k in range(20):
        m.step(ctx(rows_with_norms([0.3, 1.0, 0.02]), [6, 7, 8], k))
        total.append(m.weights_.sum().item())
    assert all(b > a for a, b in zip(total, total[1:]))


def test_it_needs_the_gradients_and_the_correct_counts():
    m = GradNormAuthors(TASKS)
    with pytest.raises(ValueError, match="ctx.correct"):
        m.step(StepContext(torch.ones(3), 0, 0, rows_with_norms([1.0, 1.0, 1.0])))
    with pytest.raises(ValueError, match="ctx.grads"):
        m.step(StepContext(torch.ones(3), 0, 0, correct=torch.tensor([1, 2, 3])))


def test_defaults_are_the_authors_and_cited():
    p = GradNormAuthorsParams()
    assert (p.alpha, p.initial_weight, p.min_weight) == (0.12, 1.0, 1e-6)
    assert GradNormAuthors(TASKS).weights_.tolist() == [1.0, 1.0, 1.0]
    assert "0c45bdd1b24101cd4b333b591a69fdc5853e0929" in GradNormAuthorsParams.__doc__
    assert "mtl_grad_norm_trainer.py" in gradnorm_authors.__doc__ and "not GradNorm" in gradnorm_authors.__doc__
    assert GradNormAuthors.needs == "shared_params" and GradNormAuthors.weight_scale == "none"
    assert GradNormAuthors.syncs_host is False and GradNormAuthors(TASKS).weights_changed_per_step()
    sets = method_sets()
    assert "gradnorm-authors" in sets["all"] and "gradnorm-authors" in sets["gradient"]
    assert "gradnorm-authors" not in sets["core"]


@pytest.mark.parametrize("bad", [{"alpha": 0.0}, {"min_weight": 0.0}, {"initial_weight": -1.0}])
def test_bad_params_are_refused(bad):
    with pytest.raises(UserError, match="gradnorm-authors"):
        GradNormAuthors.make_params(bad).check("gradnorm-authors", TASKS)


def test_the_steps_correct_counts_are_their_argmax_with_two_logits_and_the_threshold_with_one():
    gen = torch.Generator().manual_seed(0)
    two = torch.randn(32, 5, 2, generator=gen)
    y = (torch.rand(32, 5, generator=gen) < 0.4).float()
    _, predicted = torch.max(two, 2)  # their `torch.max(out, 1)` per task head (line 104)
    assert correct_predictions(two, y, "ce2").tolist() == (predicted == y).sum(0).tolist()
    one = torch.randn(32, 5, generator=gen)
    assert correct_predictions(one, y, "bce").tolist() == ((torch.sigmoid(one) > 0.5) == (y > 0.5)).sum(0).tolist()


def test_the_norm_is_theirs_less_task_t_head():
    """Their norm (every parameter with a gradient after w_t L_t's backward: the trunk and head t) squared is
    the trunk's, which the method sees, plus head t's: the one named deviation."""
    run = twin_run(GradNormAuthors, steps=1)
    model, (x, y) = run.theirs, run.batches[0]
    losses = F.binary_cross_entropy_with_logits(model(x)[1], y, reduction="none").mean(0)
    trunk = per_task_gradients(losses, model.shared_parameters(), False, "loop").norm(dim=1)
    for t in range(5):
        model.zero_grad(set_to_none=True)
        losses[t].backward(retain_graph=True)
        theirs = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm()
        head_t = math.hypot(model.heads.weight.grad[t].norm().item(), model.heads.bias.grad[t].item())
        assert theirs.item() ** 2 == pytest.approx(trunk[t].item() ** 2 + head_t**2, rel=1e-5)
        assert head_t > 0


def test_training_steps_equal_the_authors_loop():
    """Six steps, two epochs, through the trainer equal MTLTrainerWithGradNorm.train's loop written out (lines
    91–118) on the same tiny model, with the gradient norm over the trunk (the named deviation: theirs includes
    head t) and P(present) > 0.5 for their argmax over two logits."""
    run = twin_run(GradNormAuthors, steps=6)
    method = GradNormAuthors(tuple("abcde"))
    records = run.train_ours(method, epoch_of=lambda k: k // 3)

    theirs, opt = run.theirs, run.their_optimizer()
    weights, applied, task_correct = [1.0] * 5, [], [0] * 5
    for k, (x, y) in enumerate(run.batches):
        if k % 3 == 0:
            task_correct = [0] * 5
        opt.zero_grad()
        _, logits = theirs(x)
        losses = []
        for t in range(5):
            losses.append(weights[t] * F.binary_cross_entropy_with_logits(logits[:, t], y[:, t]))
            predicted = (torch.sigmoid(logits[:, t]) > 0.5).float()
            task_correct[t] += int((predicted == y[:, t]).sum().item())
        norms = []
        for t in range(5):
            opt.zero_grad()
            losses[t].backward(retain_graph=True)
            norms.append(torch.cat([p.grad.flatten() for p in theirs.shared_parameters()]).norm().item())
        applied.append(list(weights))
        weights = their_update(weights, norms, task_correct)
        opt.zero_grad()
        sum(losses).backward()
        opt.step()

    for rec, used in zip(records, applied):
        assert rec.weights.tolist() == pytest.approx(used, rel=1e-5)
    assert method.weights_.tolist() == pytest.approx(weights, rel=1e-5)
    assert method.correct_.tolist() == task_correct and applied[-1] != applied[0]
    run.assert_same_models()


def test_end_to_end_run(tiny_run, toy_bundle):
    run = tiny_run("gradnorm-authors")
    run.assert_complete()
    per_step = run.per_step()
    assert len(per_step) == len(toy_bundle.train.labels) // 16  # logged every step
    assert per_step[0] == [1.0] * 14  # the first step trains with the initial weights
    assert all(w >= 1e-6 and math.isfinite(w) for ws in per_step.values() for w in ws)
    assert run.per_step_epoch_means(len(per_step))


def test_a_task_without_labels_keeps_its_weight_and_the_mean_is_over_the_present_tasks():
    m = GradNormAuthors(("a", "b", "c"))
    norms = [0.4, 1.3, 0.0]  # c: no labelled image in the batch, no gradient
    c = StepContext(torch.tensor([0.5, 0.7, 0.0], dtype=torch.float64), 0, 0, rows_with_norms(norms),
                    correct=torch.tensor([3, 1, 0]), labelled=torch.tensor([4, 4, 0]))  # fmt: skip
    m.step(c)
    present = their_update([1.0, 1.0], norms[:2], [3, 1])  # their rule on the present tasks alone
    assert m.weights_.tolist() == pytest.approx([*present, 1.0], rel=1e-12)
    # without the mask c would gain α·mean‖g‖·0^α = 0 here, but α·mean‖g‖·C^α on a later absent step:
    m.step(replace(c, step=1))
    assert m.weights_[2].item() == 1.0
