"""The fixed harness model: a ResNet18 trunk, a shared 512-d feature and 14 task heads.

Grayscale input goes through a 1-channel conv1 (with ImageNet weights, the RGB kernels are
summed, which is exactly equivalent to repeating the gray channel three times, at a third of
the first layer's cost). The model knows nothing about methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from mtlbench.config import Head
from mtlbench.errors import UserError

HeadKind = Head  # the config's choice of head (mtlbench.config.Head)
FEATURE_DIM = 512


def resnet18_trunk(pretrained: str = "none") -> nn.Module:
    """torchvision ResNet18 without its classifier, taking 1-channel images, giving 512-d features."""
    if pretrained not in ("none", "imagenet"):
        raise UserError(f"unknown --pretrained {pretrained!r}; valid: none, imagenet")
    weights = None
    if pretrained == "imagenet":
        weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
        try:
            net = torchvision.models.resnet18(weights=weights)
        except Exception as exc:  # download refused, no cache, corrupt file
            raise UserError(
                "--pretrained imagenet: could not load the ImageNet ResNet18 weights "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); put "
                f"{weights.url.rsplit('/', 1)[-1]} in $TORCH_HOME/hub/checkpoints or use --pretrained none"
            ) from None
    else:
        net = torchvision.models.resnet18(weights=None)
    rgb_conv = net.conv1
    gray_conv = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        if pretrained == "imagenet":
            gray_conv.weight.copy_(rgb_conv.weight.sum(dim=1, keepdim=True))
    net.conv1 = gray_conv
    net.fc = nn.Identity()
    return net


class TaskHeads(nn.Module):
    """T independent linear heads on the shared feature, stored as one (T·K × 512) matrix.

    Row block t only ever receives the gradient of task t's loss, so this is exactly T
    separate `nn.Linear(512, K)` heads (same default initialisation, fan-in 512), in one matmul.
    """

    def __init__(self, num_tasks: int, outputs_per_task: int):
        super().__init__()
        self.num_tasks = num_tasks
        self.outputs_per_task = outputs_per_task
        self.linear = nn.Linear(FEATURE_DIM, num_tasks * outputs_per_task)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, T) for K=1 or (B, T, K) for K>1."""
        out = self.linear(features)
        if self.outputs_per_task == 1:
            return out
        return out.view(features.shape[0], self.num_tasks, self.outputs_per_task)


class HarnessModel(nn.Module):
    """What the trainer, the gradient spaces and the methods use of a model. `MultiTaskResNet` is the
    harness's; tests pass a smaller subclass through `train_run(model_factory=...)`.

    forward(images) returns (shared features (B, D), logits (B, T) or (B, T, K)).
    """

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task shares."""
        raise NotImplementedError

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last shared layer's parameters (GradNorm's W)."""
        raise NotImplementedError

    def head_parameters(self) -> list[nn.Parameter]:
        """Task-specific parameters."""
        raise NotImplementedError


@dataclass(frozen=True)
class ModelSpec:
    """What the harness model is built from."""

    num_tasks: int = 14
    head: HeadKind = "bce"
    pretrained: str = "none"
    freeze_trunk: bool = False


class MultiTaskResNet(HarnessModel):
    """ResNet18 trunk → shared 512-d feature → task heads."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.head not in ("bce", "ce2"):
            raise UserError(f"unknown --head {spec.head!r}; valid: bce, ce2")
        self.spec = spec
        self.trunk = resnet18_trunk(spec.pretrained)
        self.heads = TaskHeads(spec.num_tasks, 1 if spec.head == "bce" else 2)
        if spec.freeze_trunk:
            self.trunk.requires_grad_(False)

    def train(self, mode: bool = True) -> "MultiTaskResNet":
        """Train mode, except that a frozen trunk stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if self.spec.freeze_trunk:
            self.trunk.eval()
        return self

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task shares (the trunk)."""
        return list(self.trunk.parameters())

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last shared layer's parameters (GradNorm's W): the trunk's last conv block's last BN-conv."""
        block = self.trunk.layer4[-1]
        return [block.conv2.weight]

    def head_parameters(self) -> list[nn.Parameter]:
        """Task-specific parameters."""
        return list(self.heads.parameters())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(shared features (B, 512), logits) for a batch of normalized (B, 1, H, W) images."""
        features = self.trunk(images)
        return features, self.heads(features)


def per_task_losses(logits: torch.Tensor, targets: torch.Tensor, head: HeadKind) -> torch.Tensor:
    """Mean loss per task over the batch, shape (T,): BCE on one logit or 2-class CE."""
    if head == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=0)
    b, t, k = logits.shape
    ce = F.cross_entropy(logits.reshape(b * t, k), targets.reshape(b * t).long(), reduction="none")
    return ce.view(b, t).mean(dim=0)


def positive_probability(logits: torch.Tensor, head: HeadKind) -> torch.Tensor:
    """P(finding present) per image and task, (B, T)."""
    if head == "bce":
        return torch.sigmoid(logits)
    return torch.softmax(logits.float(), dim=-1)[..., 1]
