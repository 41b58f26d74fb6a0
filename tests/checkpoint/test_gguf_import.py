"""edge.checkpoint.gguf_import: the Q4_1 grid detector, the grid-free control's noise, and the packaged-model lookup."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from edge.checkpoint.gguf_import import add_grid_noise, grid_steps, packaged_smollm2
from edge.core.errors import EdgeError


def q4_1(rows: int, cols: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A dequantized Q4_1 tensor (16 levels per block of 32, min and max both used) and its per-block steps."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (rows, cols // 32, 32), generator=g)
    q[..., 0], q[..., 1] = 0, 15
    d = torch.rand(rows, cols // 32, 1, generator=g) * 0.01 + 0.001
    m = torch.randn(rows, cols // 32, 1, generator=g) * 0.05
    return (q * d + m).reshape(rows, cols), d.squeeze(-1)


def test_grid_steps_recovers_each_block_step():
    w, d = q4_1(8, 96)
    steps = grid_steps(w)
    assert steps is not None and steps.shape == (8, 3)
    torch.testing.assert_close(steps, d, rtol=1e-5, atol=1e-7)


def test_grid_steps_refuses_float_weights_and_odd_shapes():
    assert grid_steps(torch.randn(8, 64)) is None  # 32 distinct values per block
    assert grid_steps(torch.randn(8, 40)) is None  # not whole blocks
    assert grid_steps(torch.randn(64)) is None  # a norm


def test_grid_noise_is_one_step_uniform_and_seeded():
    w, d = q4_1(64, 256)
    state = {"layer.weight": w.clone(), "norm.weight": torch.ones(256), "float.weight": torch.randn(4, 64)}
    assert add_grid_noise(state, seed=0) == ["layer.weight"]
    assert torch.equal(state["norm.weight"], torch.ones(256))
    noise = (state["layer.weight"] - w).reshape(64, 8, 32) / d.unsqueeze(-1)
    assert noise.abs().max() <= 0.5 + 1e-5
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.var().item() - 1 / 12) < 0.005  # U(-1/2, 1/2) has variance 1/12
    assert grid_steps(state["layer.weight"]) is None  # off the grid now
    again = {"layer.weight": w.clone()}
    add_grid_noise(again, seed=0)
    assert torch.equal(again["layer.weight"], state["layer.weight"])


def test_missing_package_names_the_extra(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(EdgeError, match=r'pip install -e "\.\[realmodel\]"'):
        packaged_smollm2()
