"""Model builders for the built-in tasks: a flattening MLP, a small CNN and ResNet-18 for 32×32 images.

Each call builds a fresh, untrained model; a :class:`~lrtune.tasks.Task` holds one as its ``model`` factory
(e.g. ``functools.partial(mlp, 64, (128,), 10)``).

Example:
    >>> sum(p.numel() for p in mlp(64, (128,), 10).parameters())  # 64·128 + 128 + 128·10 + 10
    9610
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """A ReLU multi-layer perceptron that flattens its input first."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def small_cnn(in_channels: int, num_classes: int, width: int = 32) -> nn.Sequential:
    """Three conv-BN-ReLU blocks (two of them pooled) and global average pooling; any input size."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(in_channels, width),
        nn.MaxPool2d(2),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *block(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, num_classes),
    )


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32×32 inputs: 3×3 stride-1 first conv, no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
