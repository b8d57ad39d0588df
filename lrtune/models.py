"""Model builders for the built-in tasks: a flattening MLP, small 2-D and 1-D CNNs, ResNet-18 for 32×32 images
and a tiny Transformer encoder that labels every token and returns its own loss.

Each call builds a fresh, untrained model; a :class:`~lrtune.tasks.Task` holds one as its ``model`` factory
(e.g. ``functools.partial(mlp, 64, (128,), 10)``).

Example:
    >>> sum(p.numel() for p in mlp(64, (128,), 10).parameters())  # 64·128 + 128 + 128·10 + 10
    9610
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class ToChannels(nn.Module):
    """Reshape ``(N, L)`` sequences to ``(N, 1, L)``: one input channel for a 1-D convolution."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], 1, -1) if x.ndim == 2 else x


def conv1d_net(length: int, num_classes: int, channels: int = 25) -> nn.Sequential:
    """A small 1-D CNN for ``(N, length)`` sequences (the MNIST-1D paper's): three stride-2 convolutions
    (kernel 5, then 3, 3) with ReLU, then a linear head.

    Example:
        >>> import torch
        >>> conv1d_net(40, 10)(torch.zeros(2, 40)).shape
        torch.Size([2, 10])
        >>> sum(p.numel() for p in conv1d_net(40, 10).parameters())
        5210
    """
    out = length
    for kernel in (5, 3, 3):
        out = (out + 2 - kernel) // 2 + 1
    return nn.Sequential(
        ToChannels(),
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * out, num_classes),
    )


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 adapted to 32×32 inputs: 3×3 stride-1 first conv, no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


@dataclass
class TokenOutput:
    """What :class:`TinyTransformer` returns: the loss (``None`` without labels) and per-token logits."""

    loss: Tensor | None
    logits: Tensor


class TinyTransformer(nn.Module):
    """A small Transformer encoder that predicts one class per token and computes its own loss.

    Token and learned position embeddings, ``num_layers`` encoder layers of ``torch.nn`` (post-LN by
    default, as in the original Transformer; ``norm_first=True`` for pre-LN with a final LayerNorm) and a
    linear head. Called as ``model(input_ids=..., labels=...)``, like the models that take dict batches.

    Args:
        vocab_size: number of input tokens.
        num_classes: classes per position (the output vocabulary).
        max_len: longest sequence.
        d_model, nhead, num_layers, dim_feedforward, dropout: the encoder's sizes.
        norm_first: pre-LN instead of post-LN.

    Example:
        >>> model = TinyTransformer(16, 16, max_len=8)
        >>> out = model(input_ids=torch.zeros(2, 8, dtype=torch.long), labels=torch.zeros(2, 8, dtype=torch.long))
        >>> tuple(out.logits.shape), out.loss.ndim
        ((2, 8, 16), 0)
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        *,
        max_len: int,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.0,
        norm_first: bool = False,
    ) -> None:
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(torch.randn(1, max_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm: nn.Module = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> TokenOutput:
        """Logits of shape ``(batch, length, num_classes)``; the mean token cross-entropy when labelled."""
        hidden = self.embed(input_ids) * self.scale + self.position[:, : input_ids.shape[1]]
        logits = self.head(self.norm(self.encoder(hidden)))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        return TokenOutput(loss=loss, logits=logits)
