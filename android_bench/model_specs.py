"""The models of a session: labels, tokenizers, schemes, runtimes and the baseline.

In:  `BenchConfig` (--pte, --label, --tokenizer, --baseline) and each export's manifest.json.
     A --pte is a .pte (ExecuTorch), an ONNX folder (ONNX Runtime) or a .gguf (llama.cpp): the
     three files `edge.export --formats pte,onnx,gguf` writes from the same weights.
Out: `ModelSpec` per model, and the label the ratios are against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from android_bench.config import BenchConfig, BenchError
from android_bench.runners import Runtime, model_files, runtime_of


@dataclass(frozen=True)
class ModelSpec:
    """One --pte: what it is and where its tokenizer is."""

    label: str
    pte: Path
    tokenizer: Path
    pte_bytes: int
    pte_sha256: str
    scheme: str  # bf16 | fp32 | 8da4w | ... (from its manifest.json) | unknown
    runtime: Runtime = Runtime.EXECUTORCH


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

    specs = []
    for i, pte in enumerate(config.pte):
        runtime = runtime_of(pte)
        if runtime is Runtime.ONNXRUNTIME and not pte.is_dir():
            pte = pte.parent  # model.onnx -> its folder, which onnxruntime-genai loads
        manifest_path = pte.parent / "manifest.json"  # the export folder's (an ONNX folder sits inside it)
        manifest: dict = {}
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, json.JSONDecodeError):
                manifest = {}
        label = config.label[i] if config.label else _default_label(pte, runtime)
        tokenizer = config.tokenizer
        if tokenizer is None:
            near = pte if runtime is Runtime.ONNXRUNTIME else pte.parent
            found = [near / n for n in ("tokenizer.json", "tokenizer.model") if (near / n).is_file()]
            if not found:
                raise BenchError(f"no tokenizer.json or tokenizer.model beside {pte} (pass --tokenizer FILE)")
            tokenizer = found[0]
        specs.append(
            ModelSpec(
                label=label,
                pte=pte,
                tokenizer=tokenizer,
                pte_bytes=sum(f.stat().st_size for f in model_files(pte) if not f.name.startswith("tokenizer")),
                pte_sha256=_sha256(pte, runtime),
                scheme=(
                    scheme_from_manifest(manifest) if manifest else "bf16" if "bf16" in label.lower() else "unknown"
                ),
                runtime=runtime,
            )
        )
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise BenchError(f"two .pte files get the same label ({', '.join(labels)}); name them with --label")
    return specs


def _default_label(path: Path, runtime: Runtime) -> str:
    """model.pte -> its folder's name; an ONNX folder or model.gguf -> the export folder's name + the runtime."""
    if runtime is Runtime.ONNXRUNTIME:
        return f"{path.parent.name} · onnxruntime"
    base = path.parent.name if path.stem == "model" else path.stem
    return base if runtime is Runtime.EXECUTORCH else f"{base} · llama.cpp"


def _sha256(path: Path, runtime: Runtime) -> str:
    """The file's sha256; for an ONNX folder, the sha256 of its files' `sha256  name` lines."""
    import hashlib

    from edge.core.io import sha256_file

    if runtime is not Runtime.ONNXRUNTIME:
        return sha256_file(path)
    lines = "".join(f"{sha256_file(f)}  {f.name}\n" for f in model_files(path))
    return hashlib.sha256(lines.encode()).hexdigest()


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
