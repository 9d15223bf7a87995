"""`--loss`: each per-task loss against its paper's formula, written out here by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mtlbench.config import RunConfig, build_config, validate
from mtlbench.errors import UserError
from mtlbench.losses import TaskLoss, build_task_loss, positive_weights
from mtlbench.model import per_task_losses

LOGITS = torch.tensor([[2.0, -1.0, 0.3], [-0.5, 0.2, -3.0], [1.5, 1.0, 0.0], [-2.0, -0.7, 4.0]], dtype=torch.float64)
TARGETS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)


def _bce_terms(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.sigmoid(logits)
    return -y * torch.log(p), -(1 - y) * torch.log(1 - p)


def test_bce_is_the_mean_binary_cross_entropy_per_task():
    pos, neg = _bce_terms(LOGITS, TARGETS)
    assert torch.allclose(TaskLoss("bce")(LOGITS, TARGETS), (pos + neg).mean(dim=0))


def test_pos_weight_is_negatives_over_positives_of_the_training_split():
    train = np.array([[1, 0], [0, 0], [0, 1], [0, 1], [1, 1]])
    assert positive_weights(train).tolist() == pytest.approx([3 / 2, 2 / 3])
    weight = torch.tensor([3.0, 0.5, 1.0], dtype=torch.float64)
    pos, neg = _bce_terms(LOGITS, TARGETS)
    assert torch.allclose(TaskLoss("pos-weight", pos_weight=weight)(LOGITS, TARGETS), (weight * pos + neg).mean(dim=0))
    # balanced: with pos_weight = n/p, a task's positives and negatives carry equal total weight
    y = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    w = positive_weights(y.numpy())
    assert float(w[0]) * float(y.sum()) == float((1 - y).sum())


def test_a_task_without_training_positives_cannot_be_balanced():
    with pytest.raises(UserError, match="no training positives for task index"):
        build_task_loss("pos-weight", "bce", np.array([[1, 0], [0, 0]]))


def test_focal_is_lin_et_al_eq_5_with_gamma_2_alpha_quarter():
    p = torch.sigmoid(LOGITS)
    p_t = TARGETS * p + (1 - TARGETS) * (1 - p)
    alpha_t = TARGETS * 0.25 + (1 - TARGETS) * 0.75
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean(dim=0)
    assert torch.allclose(TaskLoss("focal")(LOGITS, TARGETS), expected)


def test_asl_is_ridnik_et_al_eqs_3_and_4_with_the_authors_settings():
    p = torch.sigmoid(LOGITS)
    p_m = (p - 0.05).clamp(min=0)
    positive = -TARGETS * torch.log(p)  # γ+ = 0: plain log-likelihood on positives
    negative = -(1 - TARGETS) * p_m**4 * torch.log(1 - p_m)
    assert torch.allclose(TaskLoss("asl")(LOGITS, TARGETS), (positive + negative).mean(dim=0))


def test_asl_holds_its_focusing_factor_constant_in_the_backward_pass():
    logits = LOGITS.clone().requires_grad_(True)
    TaskLoss("asl")(logits, TARGETS).sum().backward()
    p = torch.sigmoid(LOGITS)
    p_m = (p - 0.05).clamp(min=0)
    focus = torch.where(TARGETS > 0, torch.ones_like(p), p_m**4)
    # d/dx of −log p is −(1 − p); of −log(1 − p_m) is p where p > m (p_m = p − m), 0 where clipped
    d_log = torch.where(TARGETS > 0, -(1 - p), torch.where(p > 0.05, p * (1 - p) / (1 - p_m), torch.zeros_like(p)))
    assert torch.allclose(logits.grad, focus * d_log / len(LOGITS))


def test_losses_other_than_bce_need_one_logit_per_task():
    with pytest.raises(UserError, match="--loss focal needs one logit per task: use --head bce"):
        validate(replace(RunConfig(), loss="focal", head="ce2"))
    with pytest.raises(UserError, match="unknown --loss 'l2'"):
        validate(replace(RunConfig(), loss="l2"))


def test_bce_keeps_the_identity_of_earlier_runs_and_another_loss_is_another_cell():
    base = build_config("smoke")
    assert "loss" not in base.hashed_fields()  # runs stored before --loss existed are the same cells
    focal = replace(base, loss="focal")
    assert focal.hashed_fields()["loss"] == "focal" and focal.config_hash() != base.config_hash()


def test_each_loss_is_its_own_report_protocol_and_old_runs_count_as_bce():
    import json

    from mtlbench.report.load import protocol_config, protocol_key

    stored = json.loads(build_config("smoke").to_json())
    old = {k: v for k, v in stored.items() if k != "loss"}  # a run stored before --loss existed
    key = protocol_key(protocol_config(json.dumps(stored), None))
    assert protocol_key(protocol_config(json.dumps(old), None)) == key
    for loss in ("pos-weight", "focal", "asl"):
        assert protocol_key(protocol_config(json.dumps({**stored, "loss": loss}), None)) != key


@pytest.mark.parametrize("kind", ["bce", "pos-weight", "focal", "asl"])
def test_masked_loss_is_the_mean_over_labelled_images(kind: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, float("nan")]] * 3 + [[float("nan"), 1.0, float("nan")]] * 3)
    loss = TaskLoss(kind, "bce", torch.tensor([2.0, 0.5, 1.0]) if kind == "pos-weight" else None, masked=True)
    losses = loss(logits, targets)
    full = TaskLoss(kind, "bce", loss.pos_weight if kind == "pos-weight" else None)
    # task 0: the first three images only; task 1: all six; task 2: no label in the batch → 0, no gradient
    filled = torch.nan_to_num(targets)
    assert torch.allclose(losses[0], full(logits[:3], filled[:3])[0])
    assert torch.allclose(losses[1], full(logits, filled)[1])
    assert losses[2] == 0
    losses.sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, 2] == 0).all() and (logits.grad[3:, 0] == 0).all()
    assert loss.labelled_counts(targets).tolist() == [3, 6, 0]


def test_unmasked_loss_is_unchanged_and_counts_nothing() -> None:
    logits, targets = torch.randn(5, 4), (torch.rand(5, 4) > 0.5).float()
    assert torch.equal(TaskLoss("bce", "bce")(logits, targets), per_task_losses(logits, targets, "bce"))
    assert TaskLoss("bce", "bce").labelled_counts(targets) is None


def test_positive_weights_count_labelled_images_only() -> None:
    labels = np.array([[1, 0], [0, np.nan], [0, 1], [np.nan, 0]], dtype=np.float32)
    assert positive_weights(labels).tolist() == [2.0, 2.0]  # task 0: 2 negatives / 1 positive; task 1: 2 / 1


def test_positive_weights_of_a_task_without_any_label_are_one() -> None:
    labels = np.array([[1, np.nan], [0, np.nan], [0, np.nan]], dtype=np.float32)
    assert positive_weights(labels).tolist() == [2.0, 1.0]
