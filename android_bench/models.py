"""The .pte files of a session: labels, tokenizers, schemes and the baseline.

In:  `BenchConfig` (--pte, --label, --tokenizer, --baseline) and each .pte's manifest.json.
Out: `ModelSpec` per .pte, and the label the ratios are against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from android_bench.config import BenchConfig, BenchError


@dataclass(frozen=True)
class ModelSpec:
    """One --pte: what it is and where its tokenizer is."""

    label: str
    pte: Path
    tokenizer: Path
    pte_bytes: int
    pte_sha256: str
    scheme: str  # bf16 | fp32 | 8da4w | ... (from its manifest.json) | unknown


def scheme_from_manifest(manifest: dict) -> str:
    """edge's manifest.json -> 'bf16', 'fp32', '8da4w', '8da4w-g64' or a spelled-out scheme."""
    config = manifest.get("config", {})
    q = config.get("quantization", {}) or {}
    dtype = config.get("dtype", "fp32")
    linear, output, embedding = q.get("linear", "none"), q.get("output", "none"), q.get("embedding", "none")
    if (linear, output, embedding) == ("none", "none", "none"):
        return str(dtype)
    if (linear, output, embedding) == ("int4", "int8", "int8"):
        gs = q.get("group_size", 32)
        return "8da4w" if gs == 32 else f"8da4w-g{gs}"
    return f"linear:{linear},output:{output},embedding:{embedding}"


def describe_models(config: BenchConfig) -> list[ModelSpec]:
    """--pte (and --label, --tokenizer) -> ModelSpecs (BenchError when a tokenizer is missing)."""
    from edge.io import sha256_file

    specs = []
    for i, pte in enumerate(config.pte):
        manifest_path = pte.parent / "manifest.json"
        manifest: dict = {}
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, json.JSONDecodeError):
                manifest = {}
        label = config.label[i] if config.label else (pte.parent.name if pte.stem == "model" else pte.stem)
        tokenizer = config.tokenizer
        if tokenizer is None:
            found = [pte.parent / n for n in ("tokenizer.json", "tokenizer.model") if (pte.parent / n).is_file()]
            if not found:
                raise BenchError(f"no tokenizer.json or tokenizer.model beside {pte} (pass --tokenizer FILE)")
            tokenizer = found[0]
        specs.append(
            ModelSpec(
                label=label,
                pte=pte,
                tokenizer=tokenizer,
                pte_bytes=pte.stat().st_size,
                pte_sha256=sha256_file(pte),
                scheme=scheme_from_manifest(manifest) if manifest else ("bf16" if "bf16" in label.lower() else "unknown"),
            )
        )
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise BenchError(f"two .pte files get the same label ({', '.join(labels)}); name them with --label")
    return specs


def pick_baseline(config: BenchConfig, models: list[ModelSpec]) -> str | None:
    """--baseline, else the first bf16 unquantized model, else None (no ratios)."""
    return choose_baseline(config.baseline, [(m.label, m.scheme) for m in models])


def choose_baseline(requested: str | None, models: list[tuple[str, str]]) -> str | None:
    """requested label (checked), else the first (label, scheme) with scheme bf16, else None."""
    labels = list(dict.fromkeys(label for label, _ in models))
    if requested is not None:
        if requested not in labels:
            raise BenchError(f"baseline {requested!r} is not one of the models ({', '.join(labels)})")
        return requested
    return next((label for label, scheme in models if scheme == "bf16"), None)
