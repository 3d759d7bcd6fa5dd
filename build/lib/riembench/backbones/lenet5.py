"""LeNet-5 (LeCun et al. 1998, modern ReLU/max-pool form): table 1's small backbone.

conv5x5(in, 6) -> relu -> maxpool2 -> conv5x5(6, 16) -> relu -> maxpool2 -> flatten (400)
-> fc1 (120) -> relu -> fc2 (84) -> relu -> fc3 (classes). The three FC layers are the ones
table 1 compresses; they are plain ``nn.Linear`` modules called in sequence so ``torch.fx``
traces the model and a compressed layer can be swapped in by name.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from riembench.backbones.registry import BackboneEntry, TaskShape
from riembench.config.backbones import LeNet5Config

FC_WIDTHS = (120, 84)




def conv1_padding(image_size: int) -> int:
    """Zero padding that makes conv1's output 28x28 for inputs up to 32x32.

    Classic LeNet-5 sees 32x32 images; MNIST's 28x28 digits get the customary padding of 2, so
    the flatten is 16 x 5 x 5 = 400 for both and the FC layers match the paper's architecture.
    """
    return max(0, (32 - image_size) // 2)


def flatten_size(image_size: int) -> int:
    """Features entering fc1 for a square input of this size (400 for 28 or 32)."""
    side = image_size + 2 * conv1_padding(image_size) - 4  # conv1, 5x5 valid
    side = (side // 2 - 4) // 2  # pool, conv2 5x5 valid, pool
    if side < 1:
        raise ValueError(f"LeNet-5 needs images of at least 16x16 after padding, got {image_size}")
    return 16 * side * side


def lenet5_fc_params(num_classes: int, image_size: int = 32) -> int:
    """Closed-form parameter count of fc1..fc3 (weights + biases): 59,134 for 10 classes."""
    dims = (flatten_size(image_size), *FC_WIDTHS, num_classes)
    return sum(a * b + b for a, b in pairwise(dims))


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 32,
                 conv_bn: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=conv1_padding(image_size))
        self.bn1 = nn.BatchNorm2d(6) if conv_bn else nn.Identity()
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.bn2 = nn.BatchNorm2d(16) if conv_bn else nn.Identity()
        self.fc1 = nn.Linear(flatten_size(image_size), FC_WIDTHS[0])
        self.fc2 = nn.Linear(FC_WIDTHS[0], FC_WIDTHS[1])
        self.fc3 = nn.Linear(FC_WIDTHS[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def build_lenet5(cfg: LeNet5Config, shape: TaskShape) -> LeNet5:
    return LeNet5(shape.num_classes, shape.in_channels, shape.image_size, cfg.conv_bn)


def _fc_params(cfg: LeNet5Config, shape: TaskShape) -> int:
    return lenet5_fc_params(shape.num_classes, shape.image_size)


ENTRY = BackboneEntry(source="trained", build=build_lenet5, fc_params=_fc_params)
