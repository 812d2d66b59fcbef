"""Architectures as a user writes them in their own code: no prune-snr registry, no ``spec``.

``tests.user_models:UserNet`` is also what the CLI's ``MODULE:CALLABLE`` tests name.
"""

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(x.mean((2, 3), keepdim=True)))))


class ResidualBlock(nn.Module):
    """Grouped 3x3 conv, plain 3x3 conv, a squeeze-excite gate and an identity shortcut."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=2, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = SqueezeExcite(channels)

    def forward(self, x):
        y = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return torch.relu(x + self.se(y))


class UserNet(nn.Module):
    """A small residual CNN for ``in_chans`` x H x W images."""

    def __init__(self, width: int = 16, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block1 = ResidualBlock(width)
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.block2 = ResidualBlock(2 * width)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.block2(self.down(self.block1(self.stem(x)))).mean((2, 3)))


def build_user_net(width: int = 16, num_classes: int = 10) -> UserNet:
    """A factory, as ``MODULE:CALLABLE`` may name one."""
    return UserNet(width=width, num_classes=num_classes)


def not_a_model(num_classes: int = 10) -> str:
    """A factory that gives no module: what a typo in a user's factory does."""
    return f"{num_classes} labels"
