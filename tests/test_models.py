"""Tests for lrtune.models: parameter counts against closed forms, output shapes, the CIFAR ResNet-18."""

from __future__ import annotations

import torch
from torch import nn

from lrtune.models import TinyTransformer, cifar_resnet18, conv1d_net, mlp, small_cnn


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mlp_flattens_and_has_the_closed_form_parameter_count() -> None:
    model = mlp(64, (128, 32), 10)
    assert n_params(model) == (64 * 128 + 128) + (128 * 32 + 32) + (32 * 10 + 10)
    assert model(torch.zeros(5, 8, 8)).shape == (5, 10)
    assert n_params(mlp(3, (), 2)) == 3 * 2 + 2  # no hidden layer: a linear model


def test_small_cnn_takes_any_input_size() -> None:
    width = 8
    model = small_cnn(3, 5, width=width)
    convs = 3 * 9 * width + width * 9 * 2 * width + 2 * width * 9 * 4 * width  # 3×3 kernels, no bias
    norms = 2 * (width + 2 * width + 4 * width)  # batch-norm weight and bias
    assert n_params(model) == convs + norms + 4 * width * 5 + 5
    model.eval()
    with torch.no_grad():
        for height, wide in ((32, 32), (17, 23)):
            assert model(torch.zeros(2, 3, height, wide)).shape == (2, 5)


def test_conv1d_net_takes_sequences_with_or_without_a_channel() -> None:
    c = 25
    model = conv1d_net(40, 10, channels=c)
    # Lengths 40 -> 19 -> 10 -> 5 (stride 2, padding 1, kernels 5, 3, 3).
    assert n_params(model) == (1 * 5 * c + c) + 2 * (c * 3 * c + c) + (c * 5 * 10 + 10)
    x = torch.randn(4, 40)
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.equal(model(x.unsqueeze(1)), out)  # (N, 1, L) is the same input
    assert conv1d_net(64, 3, channels=8)(torch.zeros(2, 64)).shape == (2, 3)


def test_cifar_resnet18_is_adapted_to_32px() -> None:
    model = cifar_resnet18(10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)  # type: ignore[union-attr]
    assert isinstance(model.maxpool, nn.Identity)
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_tiny_transformer_returns_its_loss_and_per_token_logits() -> None:
    torch.manual_seed(0)
    post = TinyTransformer(10, 7, max_len=5, num_layers=2)
    ids, labels = torch.randint(0, 10, (3, 5)), torch.randint(0, 7, (3, 5))
    out = post(input_ids=ids, labels=labels)
    assert out.logits.shape == (3, 5, 7) and out.loss is not None
    expected = nn.functional.cross_entropy(out.logits.reshape(15, 7), labels.reshape(15))
    assert torch.equal(out.loss, expected)
    assert post(input_ids=ids[:, :4]).loss is None  # shorter sequences, no labels: no loss
    masked = labels.clone()
    masked[:, 0] = -100
    kept = nn.functional.cross_entropy(out.logits[:, 1:].reshape(12, 7), labels[:, 1:].reshape(12))
    assert torch.allclose(post(input_ids=ids, labels=masked).loss, kept)  # type: ignore[arg-type]
    pre = TinyTransformer(10, 7, max_len=5, num_layers=2, norm_first=True)
    assert isinstance(pre.norm, nn.LayerNorm) and isinstance(post.norm, nn.Identity)
    assert pre.encoder.layers[0].norm_first and not post.encoder.layers[0].norm_first
