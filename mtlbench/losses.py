"""The per-task training loss of a run (`--loss`), the same for every method of a protocol.

Each returns the (T,) per-task mean over the batch; the method weights and combines those.

* `bce`: binary cross-entropy on one logit per task (with `--head ce2`, 2-class cross-entropy).
* `pos-weight`: class-balanced BCE, per task `pos_weight` = negatives / positives on the training split,
  so that a task's positives weigh as much as its negatives (torch's BCEWithLogits `pos_weight`).
* `focal`: focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017, eq. 5),
  −α_t (1 − p_t)^γ log p_t with the paper's best setting γ = 2, α = 0.25 (its Table 1a), through
  torchvision.ops.sigmoid_focal_loss, whose defaults they are.
* `asl`: asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021,
  eqs. 3–4): L+ = (1 − p)^γ+ log p, L− = p_m^γ− log(1 − p_m), p_m = max(p − m, 0), with the authors'
  training settings γ− = 4, γ+ = 0, m = 0.05 and the focusing factor held constant in the backward
  pass (Alibaba-MIIL/ASL@8f393d0 train.py, `AsymmetricLoss(gamma_neg=4, gamma_pos=0, clip=0.05,
  disable_torch_grad_focal_loss=True)`), their ε = 1e-8 under the logarithms.

Losses other than `bce` need one logit per task (`--head bce`).

On a dataset with missing labels (NaN targets) the loss is masked: each task's loss is the mean over
the batch's images that have a label for it, and 0 (with no gradient) for a task that has none in the
batch. On a fully labelled dataset the unmasked path runs, bit for bit what it always computed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from mtlbench.config import Head, Loss
from mtlbench.datasets.base import labelled as label_mask
from mtlbench.datasets.base import positives as label_positives
from mtlbench.errors import UserError
from mtlbench.model import per_image_losses

FOCAL_GAMMA, FOCAL_ALPHA = 2.0, 0.25
ASL_GAMMA_NEG, ASL_GAMMA_POS, ASL_CLIP, ASL_EPS = 4.0, 0.0, 0.05, 1e-8


class TaskLoss(nn.Module):
    """Per-task mean loss (T,) of logits (B, T) or (B, T, 2) against 0/1 targets (B, T).

    `pos_weight` (T,) is a buffer: it moves with the module and is part of a checkpoint."""

    def __init__(
        self, kind: Loss = "bce", head: Head = "bce", pos_weight: torch.Tensor | None = None, masked: bool = False
    ):
        super().__init__()
        if kind != "bce" and head != "bce":
            raise UserError(f"--loss {kind} needs one logit per task: use --head bce (got --head {head})")
        if kind == "pos-weight" and pos_weight is None:
            raise ValueError("pos-weight needs the training split's per-task pos_weight")
        self.kind, self.head, self.masked = kind, head, masked
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else torch.ones(0))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(T,) per-task means over the batch (over its labelled images, when masked)."""
        if not self.masked:
            return self.per_image(logits, targets).mean(dim=0)
        labelled = ~torch.isnan(targets)
        per_image = self.per_image(logits, torch.where(labelled, targets, torch.zeros_like(targets)))
        per_image = torch.where(labelled, per_image, torch.zeros_like(per_image))  # no NaN·0 in the backward
        return per_image.sum(dim=0) / labelled.sum(dim=0).clamp(min=1)

    def labelled_counts(self, targets: torch.Tensor) -> torch.Tensor | None:
        """(T,) int64: images of the batch with a label per task; None when the run's labels are complete."""
        return (~torch.isnan(targets)).sum(dim=0) if self.masked else None

    def per_image(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, T) loss of each image and task (targets 0/1)."""
        if self.kind == "bce":
            return per_image_losses(logits, targets, self.head)
        if self.kind == "pos-weight":
            return F.binary_cross_entropy_with_logits(
                logits, targets, pos_weight=self.pos_weight.to(logits.dtype), reduction="none"
            )
        if self.kind == "focal":
            return sigmoid_focal_loss(logits, targets, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="none")
        return asymmetric_loss(logits, targets)


def asymmetric_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma_neg: float = ASL_GAMMA_NEG,
    gamma_pos: float = ASL_GAMMA_POS,
    clip: float = ASL_CLIP,
    eps: float = ASL_EPS,
) -> torch.Tensor:
    """ASL per image and task (Ridnik et al. 2021, eqs. 3–4), the focusing factor constant in the backward pass."""
    p = torch.sigmoid(logits)
    p_neg = (1 - p + clip).clamp(max=1) if clip > 0 else 1 - p  # 1 − p_m, p_m = max(p − m, 0)
    log_terms = targets * torch.log(p.clamp(min=eps)) + (1 - targets) * torch.log(p_neg.clamp(min=eps))
    with torch.no_grad():
        p_true = targets * p + (1 - targets) * p_neg  # p_t: p for a positive, 1 − p_m for a negative
        gamma = gamma_pos * targets + gamma_neg * (1 - targets)
        focus = torch.pow(1 - p_true, gamma)
    return -(log_terms * focus)


def positive_weights(train_labels: np.ndarray) -> torch.Tensor:
    """Per task negatives / positives among the training split's labelled images (float32, (T,)); a task
    without positives in training is a one-line UserError (its weight would be infinite), unless no
    training image has a label for it (a finding the dataset does not label: its loss is always masked,
    its weight 1)."""
    labels = np.asarray(train_labels)
    positives, labelled = label_positives(labels), label_mask(labels).sum(axis=0)
    empty = (positives == 0) & (labelled > 0)
    if empty.any():
        raise UserError(
            "--loss pos-weight: no training positives for task index(es) "
            f"{', '.join(map(str, np.flatnonzero(empty)))}; use more training images or another --loss"
        )
    ratio = np.where(labelled > 0, (labelled - positives) / np.maximum(positives, 1), 1.0)
    return torch.tensor(ratio, dtype=torch.float32)


def build_task_loss(kind: Loss, head: Head, train_labels: np.ndarray, masked: bool = False) -> TaskLoss:
    """The run's TaskLoss; `pos-weight` reads the training split's labels (N, T); `masked` when some
    split of the run's data lacks labels."""
    return TaskLoss(kind, head, positive_weights(train_labels) if kind == "pos-weight" else None, masked)
