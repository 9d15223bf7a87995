"""The fixed harness model: a ResNet18 trunk, a shared 512-d feature and 14 task heads (`--arch` and
`--neck` give the DeepChest authors' ResNet50 with a Linear(2048→512)+ReLU neck, or DenseNet-121).

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


# arch → (torchvision builder, its ImageNet weights (the torchvision default of `pretrained=True`), the
# first conv's attribute path, the width of its pooled features)
ARCHS: dict[str, tuple[str, str, str, int]] = {
    "resnet18": ("resnet18", "ResNet18_Weights", "conv1", 512),
    "resnet50": ("resnet50", "ResNet50_Weights", "conv1", 2048),
    "densenet121": ("densenet121", "DenseNet121_Weights", "features.conv0", 1024),
}


def trunk(arch: str = "resnet18", pretrained: str = "none", *, otherwise: str = "use --pretrained none") -> nn.Module:
    """A torchvision `arch` without its classifier, taking 1-channel images, giving pooled features
    (ARCHS' width): ResNet18 is the harness's; ResNet50 the DeepChest authors'; DenseNet-121 CheXNet's.
    Weights that cannot be loaded are a UserError saying where to put them, or to do `otherwise`."""
    if pretrained not in ("none", "imagenet"):
        raise UserError(f"unknown --pretrained {pretrained!r}; valid: none, imagenet")
    if arch not in ARCHS:
        raise UserError(f"unknown --arch {arch!r}; valid: {', '.join(ARCHS)}")
    builder, weights_enum, conv_path, _ = ARCHS[arch]
    weights = None
    if pretrained == "imagenet":
        weights = getattr(torchvision.models, weights_enum).IMAGENET1K_V1
        try:
            net = getattr(torchvision.models, builder)(weights=weights)
        except Exception as exc:  # download refused, no cache, corrupt file
            raise UserError(
                f"--pretrained imagenet: could not load the ImageNet {arch} weights "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); put "
                f"{weights.url.rsplit('/', 1)[-1]} in $TORCH_HOME/hub/checkpoints or {otherwise}"
            ) from None
    else:
        net = getattr(torchvision.models, builder)(weights=None)
    parent_path, _, conv_name = conv_path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    rgb_conv = getattr(parent, conv_name)
    gray_conv = nn.Conv2d(1, rgb_conv.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        if pretrained == "imagenet":
            gray_conv.weight.copy_(rgb_conv.weight.sum(dim=1, keepdim=True))
    setattr(parent, conv_name, gray_conv)
    if hasattr(net, "fc"):
        net.fc = nn.Identity()
    else:
        net.classifier = nn.Identity()
    return net


def resnet18_trunk(pretrained: str = "none") -> nn.Module:
    """The harness's trunk: `trunk("resnet18", pretrained)`."""
    return trunk("resnet18", pretrained)


class TaskHeads(nn.Module):
    """T independent linear heads on the shared feature, stored as one (T·K × D) matrix.

    Row block t only ever receives the gradient of task t's loss, so this is exactly T
    separate `nn.Linear(D, K)` heads (same default initialisation, fan-in D), in one matmul.
    """

    def __init__(self, num_tasks: int, outputs_per_task: int, in_features: int = FEATURE_DIM):
        super().__init__()
        self.num_tasks = num_tasks
        self.outputs_per_task = outputs_per_task
        self.linear = nn.Linear(in_features, num_tasks * outputs_per_task)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, T) for K=1 or (B, T, K) for K>1."""
        out = self.linear(features)
        if self.outputs_per_task == 1:
            return out
        return out.view(features.shape[0], self.num_tasks, self.outputs_per_task)


class HarnessModel(nn.Module):
    """What the trainer, the gradient spaces and the methods use of a model. `MultiTaskNet` is the
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
    arch: str = "resnet18"
    neck: int = 0  # > 0: a shared Linear(trunk width → neck) + ReLU before the heads (the DeepChest authors' 512)


class MultiTaskNet(HarnessModel):
    """Trunk (ResNet18 unless `spec.arch`) → optional neck → shared feature → task heads."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.head not in ("bce", "ce2"):
            raise UserError(f"unknown --head {spec.head!r}; valid: bce, ce2")
        if spec.neck < 0:
            raise UserError(f"--neck must be ≥ 0 (0 = no neck), got {spec.neck}")
        self.spec = spec
        self.trunk = trunk(spec.arch, spec.pretrained)
        width = ARCHS[spec.arch][3]
        # the authors' XrayResNet: F.relu(self.fc(backbone(x))), fc = Linear(2048, 512) (models/xray_resnet.py)
        self.neck = nn.Sequential(nn.Linear(width, spec.neck), nn.ReLU()) if spec.neck else None
        self.heads = TaskHeads(spec.num_tasks, 1 if spec.head == "bce" else 2, spec.neck or width)
        if spec.freeze_trunk:
            self.trunk.requires_grad_(False)

    def train(self, mode: bool = True) -> "MultiTaskNet":
        """Train mode, except that a frozen trunk stays in eval mode (BatchNorm statistics fixed)."""
        super().train(mode)
        if self.spec.freeze_trunk:
            self.trunk.eval()
        return self

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task shares (the trunk, and the neck where there is one)."""
        return list(self.trunk.parameters()) + (list(self.neck.parameters()) if self.neck is not None else [])

    def last_shared_layer(self) -> list[nn.Parameter]:
        """The last shared layer's parameters (GradNorm's W): the neck's weight where there is a neck, else the
        trunk's last convolution (ResNet18's last block's conv2, ResNet50's conv3, DenseNet-121's last dense
        layer's conv2)."""
        if self.neck is not None:
            return [self.neck[0].weight]
        if self.spec.arch == "densenet121":
            return [list(self.trunk.features.denseblock4.children())[-1].conv2.weight]
        block = self.trunk.layer4[-1]
        return [block.conv3.weight if self.spec.arch == "resnet50" else block.conv2.weight]

    def head_parameters(self) -> list[nn.Parameter]:
        """Task-specific parameters."""
        return list(self.heads.parameters())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(shared features (B, D), logits) for a batch of normalized (B, 1, H, W) images."""
        features = self.trunk(images)
        if self.neck is not None:
            features = self.neck(features)
        return features, self.heads(features)


def per_image_losses(logits: torch.Tensor, targets: torch.Tensor, head: HeadKind) -> torch.Tensor:
    """Loss of each image and task, shape (B, T): BCE on one logit or 2-class CE."""
    if head == "bce":
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    b, t, k = logits.shape
    return F.cross_entropy(logits.reshape(b * t, k), targets.reshape(b * t).long(), reduction="none").view(b, t)


def per_task_losses(logits: torch.Tensor, targets: torch.Tensor, head: HeadKind) -> torch.Tensor:
    """Mean loss per task over the batch, shape (T,): BCE on one logit or 2-class CE."""
    return per_image_losses(logits, targets, head).mean(dim=0)


def positive_probability(logits: torch.Tensor, head: HeadKind) -> torch.Tensor:
    """P(finding present) per image and task, (B, T)."""
    if head == "bce":
        return torch.sigmoid(logits)
    return torch.softmax(logits.float(), dim=-1)[..., 1]
