"""SpinQuant's rotations as an artifact: made, saved, loaded and checked against a model.

In:  a model shape (`ModelArgs`) and a kind (`RotationKind`), or a rotations file.
Out: `Rotations`: R1 [D, D] and one R2 [Dh, Dh] per layer (float64, orthogonal) with
     their provenance; `save_rotations` writes them as safetensors (R1, R2.0 ... R2.{L-1})
     with the model shape, the provenance and a hash of the tensors in the file's metadata;
     `load_rotations` reads one back and refuses a file made for another shape.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edge.config import RotationKind
from edge.core.errors import EdgeError
from edge.core.io import write_atomic
from edge.model import ModelArgs
from edge.spinquant.hadamard import check_hadamard_order, random_hadamard

FILE_FORMAT = "edge-spinquant-rotations"
FILE_VERSION = 1


@dataclass(frozen=True)
class Rotations:
    """R1 [D, D] and per-layer R2 [Dh, Dh], float64, with where they came from."""

    kind: RotationKind
    r1: torch.Tensor
    r2: tuple[torch.Tensor, ...]
    provenance: dict = field(default_factory=dict)  # seed, steps, learning rate, calibration hash, losses...

    def sha256(self) -> str:
        """Hash of the rotation values (float64 bytes, as saved), independent of the file's metadata."""
        h = hashlib.sha256()
        for t in (self.r1, *self.r2):
            h.update(t.to(torch.float64).contiguous().numpy().tobytes())
        return h.hexdigest()

    def shape(self) -> dict[str, int]:
        return {"dim": self.r1.shape[0], "head_dim": self.r2[0].shape[0], "n_layers": len(self.r2)}


def model_rotation_shape(args: ModelArgs) -> dict[str, int]:
    return {"dim": args.dim, "head_dim": args.head_dim, "n_layers": args.n_layers}


def check_rotatable(args: ModelArgs) -> None:
    """Raise EdgeError if R1 or R2 cannot be built for this shape."""
    check_hadamard_order(args.dim, what="hidden size")
    check_hadamard_order(args.head_dim, what="head dimension")


def hadamard_rotations(args: ModelArgs, *, seed: int) -> Rotations:
    """ModelArgs, seed -> random Hadamard R1 (seed) and R2s (seed + 1 + layer)."""
    check_rotatable(args)
    r1 = random_hadamard(args.dim, seed=seed)
    r2 = tuple(random_hadamard(args.head_dim, seed=seed + 1 + i) for i in range(args.n_layers))
    return Rotations(kind=RotationKind.HADAMARD, r1=r1, r2=r2, provenance={"seed": seed})


def save_rotations(rot: Rotations, path: Path) -> str:
    """Rotations -> safetensors file at `path` (atomic); returns the tensors' sha256."""
    from safetensors.torch import save

    # float64: a reused file gives bit-for-bit the rotations of the export that made it.
    tensors = {"R1": rot.r1.to(torch.float64).contiguous()}
    tensors |= {f"R2.{i}": r.to(torch.float64).contiguous() for i, r in enumerate(rot.r2)}
    digest = rot.sha256()
    metadata = {
        "format": FILE_FORMAT,
        "version": str(FILE_VERSION),
        "kind": rot.kind.value,
        "shape": json.dumps(rot.shape()),
        "provenance": json.dumps(rot.provenance),
        "sha256": digest,
    }
    write_atomic(Path(path), lambda f: f.write(save(tensors, metadata=metadata)))
    return digest


def read_rotation_header(path: Path) -> dict:
    """A rotations file -> its metadata (shape, kind, provenance, sha256), without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise EdgeError(f"rotation file {path} does not exist") from None
    except Exception as e:
        raise EdgeError(f"rotation file {path} is not a readable safetensors file ({type(e).__name__})") from None
    if meta.get("format") != FILE_FORMAT:
        raise EdgeError(f"{path} is not an edge rotations file (no '{FILE_FORMAT}' header)")
    try:
        header = {
            "kind": RotationKind(meta["kind"]),
            "shape": json.loads(meta["shape"]),
            "provenance": json.loads(meta.get("provenance", "{}")),
            "sha256": meta["sha256"],
        }
    except (KeyError, ValueError) as e:
        raise EdgeError(f"rotation file {path} has a bad header ({e})") from None
    if not isinstance(header["shape"], dict) or not isinstance(header["provenance"], dict):
        raise EdgeError(f"rotation file {path} has a bad header (shape and provenance must be mappings)")
    return header


def check_rotation_file(path: Path, args: ModelArgs) -> dict:
    """Raise EdgeError if the file was made for another model shape; returns its header."""
    header = read_rotation_header(path)
    want = model_rotation_shape(args)
    if header["shape"] != want:
        got = ", ".join(f"{k} {v}" for k, v in header["shape"].items())
        exp = ", ".join(f"{k} {v}" for k, v in want.items())
        raise EdgeError(f"rotation file {path} was made for a model with {got}; this model has {exp}")
    return header


def load_rotations(path: Path, args: ModelArgs) -> Rotations:
    """A rotations file checked against `args` -> Rotations (float64), its hash verified."""
    from safetensors.torch import load_file

    header = check_rotation_file(path, args)
    tensors = load_file(str(path))
    try:
        r1 = tensors["R1"].double()
        r2 = tuple(tensors[f"R2.{i}"].double() for i in range(args.n_layers))
    except KeyError as e:
        raise EdgeError(f"rotation file {path} lacks tensor {e}") from None
    rot = Rotations(kind=header["kind"], r1=r1, r2=r2, provenance=header["provenance"])
    if rot.sha256() != header["sha256"]:
        raise EdgeError(f"rotation file {path} is corrupt: its tensors do not match the hash in its header")
    if r1.shape != (args.dim, args.dim) or any(r.shape != (args.head_dim, args.head_dim) for r in r2):
        raise EdgeError(f"rotation file {path} holds tensors of the wrong shape for this model")
    for name, r in (("R1", r1), *((f"R2.{i}", t) for i, t in enumerate(r2))):
        eye = torch.eye(r.shape[0], dtype=torch.float64)
        if not torch.isfinite(r).all() or float((r @ r.T - eye).abs().max()) > 1e-4:
            raise EdgeError(f"rotation file {path}: {name} is not orthogonal")
    return rot
