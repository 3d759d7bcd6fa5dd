"""ResNet-9 (the DAWNBench / Myrtle.ai CIFAR network): table 1's larger backbone.

prep conv(64) -> layer1 conv(128)+pool, + res1 (2x conv 128) -> layer2 conv(256)+pool
-> layer3 conv(512)+pool, + res3 (2x conv 512) -> adaptive max pool -> flatten -> fc
-> x ``logit_scale``. Every conv is 3x3, bias-free, followed by BatchNorm and ReLU. The constant
logit scale (Myrtle's 0.125; not a parameter, so FC counts are unchanged) keeps the max-pooled
logits small: without it (``logit_scale=1``) full-width training diverged in its first epoch at
lr 0.02-0.05 on digits, while width 0.25 trained fine (docs/backbones.md).

``width`` scales every conv's channel count (``width=0.25``: 16/32/64/128), for CPU runs; the FC
input is then ``round(512 * width)``. ``head_hidden`` replaces the single ``fc`` by
``fc1 -> relu -> fc2`` with that hidden width (docs/backbones.md explains when you would want it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from riembench.backbones.registry import BackboneEntry, TaskShape
from riembench.config.backbones import ResNet9Config

BASE_CHANNELS = (64, 128, 256, 512)




def channels(width: float) -> tuple[int, int, int, int]:
    """Conv widths for a multiplier (at least one channel each)."""
    return tuple(max(1, round(c * width)) for c in BASE_CHANNELS)  # type: ignore[return-value]


def resnet9_fc_params(num_classes: int, width: float = 1.0, head_hidden: int | None = None) -> int:
    """Closed-form FC parameter count: 512*C + C for the standard head (5,130 / 51,300)."""
    feat = channels(width)[-1]
    if head_hidden is None:
        return feat * num_classes + num_classes
    return feat * head_hidden + head_hidden + head_hidden * num_classes + num_classes


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                               nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ResNet9(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 head_hidden: int | None = None, logit_scale: float = 0.125) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels(width)
        self.prep = conv_bn(in_channels, c1)
        self.layer1 = conv_bn(c1, c2, pool=True)
        self.res1 = nn.Sequential(conv_bn(c2, c2), conv_bn(c2, c2))
        self.layer2 = conv_bn(c2, c3, pool=True)
        self.layer3 = conv_bn(c3, c4, pool=True)
        self.res3 = nn.Sequential(conv_bn(c4, c4), conv_bn(c4, c4))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head_hidden = head_hidden
        self.logit_scale = float(logit_scale)
        if head_hidden is None:
            self.fc = nn.Linear(c4, num_classes)
        else:
            self.fc1 = nn.Linear(c4, head_hidden)
            self.fc2 = nn.Linear(head_hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.prep(x))
        x = x + self.res1(x)
        x = self.layer3(self.layer2(x))
        x = x + self.res3(x)
        x = torch.flatten(self.pool(x), 1)
        if self.head_hidden is None:  # a Python constant, so fx traces one branch
            return self.fc(x) * self.logit_scale
        return self.fc2(F.relu(self.fc1(x))) * self.logit_scale


def build_resnet9(cfg: ResNet9Config, shape: TaskShape) -> ResNet9:
    return ResNet9(shape.num_classes, shape.in_channels, cfg.width, cfg.head_hidden,
                   cfg.logit_scale)


def _fc_params(cfg: ResNet9Config, shape: TaskShape) -> int:
    return resnet9_fc_params(shape.num_classes, cfg.width, cfg.head_hidden)


ENTRY = BackboneEntry(source="trained", build=build_resnet9, fc_params=_fc_params)
