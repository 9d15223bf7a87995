"""`--arch` and `--neck`: the trunks, their 1-channel first convolution, the neck, and what the gradient
spaces read of the model (shared parameters, the last shared layer)."""

from dataclasses import replace

import pytest
import torch
import torchvision

from mtlbench.config import build_config
from mtlbench.errors import UserError
from mtlbench.model import ARCHS, ModelSpec, MultiTaskNet, trunk

CASES = [(arch, neck) for arch in ARCHS for neck in (0, 512)]


@pytest.mark.parametrize(("arch", "neck"), CASES)
def test_shapes_and_the_split_of_parameters(arch, neck):
    model = MultiTaskNet(ModelSpec(14, "bce", arch=arch, neck=neck)).eval()
    features, logits = model(torch.randn(2, 1, 32, 32))
    assert features.shape == (2, neck or ARCHS[arch][3]) and logits.shape == (2, 14)
    shared, heads = model.shared_parameters(), model.head_parameters()
    assert {id(p) for p in shared}.isdisjoint(id(p) for p in heads)
    assert sum(p.numel() for p in shared) + sum(p.numel() for p in heads) == sum(p.numel() for p in model.parameters())
    (last,) = model.last_shared_layer()
    assert any(last is p for p in shared)
    if neck:
        assert last is model.neck[0].weight and last.shape == (neck, ARCHS[arch][3])
        assert torch.all(features >= 0)  # the ReLU after the neck, as the authors' F.relu(self.fc(x))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_the_first_convolution_takes_one_channel(arch):
    net = trunk(arch)
    first = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert (first.in_channels, first.out_channels, first.kernel_size, first.stride) == (1, 64, (7, 7), (2, 2))


def test_the_default_trunk_is_built_as_before():
    """ResNet18 without a neck draws its initial weights in the same order as before --arch existed (torchvision's
    ResNet18, then the 1-channel conv1, then the heads), so results stay bit-identical."""
    torch.manual_seed(0)
    model = MultiTaskNet(ModelSpec(14, "bce"))
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    reference.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    heads = torch.nn.Linear(512, 14)
    assert torch.equal(model.trunk.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.trunk.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(model.heads.linear.weight, heads.weight) and model.neck is None


def test_last_shared_layer_without_a_neck_is_the_trunks_last_convolution():
    r50 = MultiTaskNet(ModelSpec(14, "bce", arch="resnet50"))
    assert r50.last_shared_layer()[0] is r50.trunk.layer4[-1].conv3.weight
    dense = MultiTaskNet(ModelSpec(14, "bce", arch="densenet121"))
    assert dense.last_shared_layer()[0] is dense.trunk.features.denseblock4.denselayer16.conv2.weight


def test_bad_values_are_one_line_errors():
    with pytest.raises(UserError, match="unknown --arch 'vgg16'; valid: resnet18, resnet50, densenet121"):
        trunk("vgg16")
    with pytest.raises(UserError, match=r"--neck must be ≥ 0"):
        MultiTaskNet(ModelSpec(14, "bce", neck=-1))
    with pytest.raises(UserError, match="--arch"):
        build_config("smoke", [({"arch": "vgg16"}, "command line")])


def test_arch_and_neck_are_hashed_only_when_not_the_harness():
    base = build_config("smoke")
    assert "arch" not in base.hashed_fields() and "neck" not in base.hashed_fields()  # earlier runs keep their identity
    hashes = {replace(base, arch=a, neck=n).config_hash() for a, n in CASES}
    assert len(hashes) == len(CASES) and base.config_hash() in hashes
