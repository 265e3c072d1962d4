"""SASRec's training kernels: the chunked cross-entropy equals torch's, byte dropout
drops what it says and keeps the expectation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from movierec.models.sasrec.loss import full_cross_entropy
from movierec.models.sasrec.model import ByteDropout

torch.set_num_threads(1)


@pytest.mark.parametrize("positions, chunk", [(37, 8), (64, 64), (5, 512)])
def test_chunked_cross_entropy_equals_torch_in_value_and_gradients(positions, chunk) -> None:
    gen = torch.Generator().manual_seed(positions)
    hidden = torch.randn(positions, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    table = torch.randn(50, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 50, (positions,), generator=gen)
    weight = torch.randn((), generator=gen, dtype=torch.float64)   # a non-unit upstream grad

    expected = nn.functional.cross_entropy(hidden @ table.T, target)
    (expected * weight).backward()
    want_h, want_t = hidden.grad.clone(), table.grad.clone()
    hidden.grad, table.grad = None, None

    got = full_cross_entropy(hidden, table, target, chunk=chunk)
    (got * weight).backward()
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.allclose(hidden.grad, want_h, atol=1e-12)
    assert torch.allclose(table.grad, want_t, atol=1e-12)


def test_chunked_cross_entropy_is_finite_for_large_logits() -> None:
    hidden = torch.full((4, 2), 300.0, requires_grad=True)
    table = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.5, 0.5]], requires_grad=True)
    loss = full_cross_entropy(hidden, table, torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(hidden.grad).all()
    assert loss.item() == pytest.approx(
        nn.functional.cross_entropy(hidden @ table.T, torch.tensor([0, 1, 2, 0])).item())


def test_no_positions_give_a_zero_loss_with_gradients() -> None:
    hidden = torch.zeros(0, 8, requires_grad=True)
    table = torch.randn(10, 8, requires_grad=True)
    loss = full_cross_entropy(hidden, table, torch.zeros(0, dtype=torch.int64))
    loss.backward()
    assert loss.item() == 0.0 and table.grad is not None and not table.grad.any()


def test_byte_dropout_drops_its_share_and_keeps_the_expectation() -> None:
    torch.manual_seed(0)
    drop = ByteDropout(0.2)
    x = torch.ones(400, 1000)
    y = drop.train()(x)
    dropped = (y == 0).float().mean().item()
    assert drop.cut == 51
    assert abs(dropped - 51 / 256) < 0.005          # 400k draws: sd 0.0006
    assert torch.allclose(y[y > 0], torch.tensor(256 / 205))
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(ByteDropout(0.0).train()(x), x)


def test_byte_dropout_follows_torch_seed_and_odd_shapes() -> None:
    drop = ByteDropout(0.5).train()
    x = torch.ones(3, 5, 7)                          # 105 elements: not a multiple of 8
    torch.manual_seed(7)
    first = drop(x)
    torch.manual_seed(7)
    assert torch.equal(drop(x), first)
    assert first.shape == x.shape and 0 < (first == 0).sum() < x.numel()
