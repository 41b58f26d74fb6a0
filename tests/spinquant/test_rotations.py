"""Rotations as an artifact (saved, reloaded, refused when they do not fit) and the Cayley optimizer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from edge.checkpoint import open_checkpoint
from edge.core.errors import EdgeError
from edge.spinquant.optimize import CayleySGD
from edge.spinquant.rotations import hadamard_rotations, load_rotations, save_rotations


def test_save_and_load_roundtrip(tiny_hf, tmp_path):
    args = open_checkpoint(tiny_hf).args
    rot = hadamard_rotations(args, seed=5)
    digest = save_rotations(rot, tmp_path / "r.safetensors")
    back = load_rotations(tmp_path / "r.safetensors", args)
    assert back.sha256() == digest == rot.sha256() and back.kind is rot.kind and back.provenance == {"seed": 5}
    torch.testing.assert_close(back.r1, rot.r1, rtol=0, atol=1e-7)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_file_for_another_shape_is_refused(tiny_hf, tmp_path):
    args = open_checkpoint(tiny_hf).args
    save_rotations(hadamard_rotations(args, seed=0), tmp_path / "r.safetensors")
    with pytest.raises(
        EdgeError,
        match=(
            "was made for a model with dim 64, head_dim 16, n_layers 2; this model has dim 64, head_dim 16, n_layers 3"
        ),
    ):
        load_rotations(tmp_path / "r.safetensors", replace(args, n_layers=3))


def _edited_file(args, path: Path, edit) -> Path:
    """A valid rotations file for `args` at `path`, then its tensors changed by edit(dict) with the header kept."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    save_rotations(hadamard_rotations(args, seed=0), path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata=meta)
    return path


def test_a_tampered_file_is_refused(tiny_hf, tmp_path):
    args = open_checkpoint(tiny_hf).args
    path = _edited_file(args, tmp_path / "r.safetensors", lambda t: t.update(R1=t["R1"].flip(0)))
    with pytest.raises(EdgeError, match="corrupt"):
        load_rotations(path, args)
    path.write_bytes(b"not safetensors")
    with pytest.raises(EdgeError, match="not a readable safetensors file"):
        load_rotations(path, args)


def test_a_file_missing_a_layer_is_refused(tiny_hf, tmp_path):
    args = open_checkpoint(tiny_hf).args
    last = f"R2.{args.n_layers - 1}"
    path = _edited_file(args, tmp_path / "r.safetensors", lambda t: t.pop(last))
    with pytest.raises(EdgeError, match=f"lacks tensor '{last}'"):
        load_rotations(path, args)


@pytest.mark.parametrize("spoil", ["scaled", "nan"])
def test_a_matrix_that_is_not_a_rotation_is_refused(tiny_hf, tmp_path, spoil):
    """A file whose hash is consistent (written by save_rotations) but whose R2.1 is not orthogonal."""
    args = open_checkpoint(tiny_hf).args
    rot = hadamard_rotations(args, seed=0)
    bad = rot.r2[1] * 1.01 if spoil == "scaled" else rot.r2[1].clone().fill_(float("nan"))
    save_rotations(replace(rot, r2=(rot.r2[0], bad)), tmp_path / "r.safetensors")
    with pytest.raises(EdgeError, match="R2.1 is not orthogonal"):
        load_rotations(tmp_path / "r.safetensors", args)


def test_cayley_sgd_stays_orthogonal_and_descends():
    """Minimise ||R - T||^2 over orthogonal R for an orthogonal target T: R stays on the manifold and approaches T."""
    g = torch.Generator().manual_seed(0)
    target = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0]
    start_point = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0]
    if torch.det(start_point) * torch.det(target) < 0:  # stay in the target's connected component of O(16)
        start_point[:, 0] *= -1
    r = torch.nn.Parameter(start_point)
    opt = CayleySGD([r], lr=0.2)
    start = float((r - target).pow(2).sum())
    for _ in range(200):
        loss = (r - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(r.detach() @ r.detach().T, torch.eye(16, dtype=torch.float64), rtol=0, atol=1e-9)
    assert float((r - target).pow(2).sum()) < 0.5 * start
