"""The tables of the README and docs/, copied from benchmarks/results/ by this script, never by hand.

Each block between `<!-- table: NAME -->` and `<!-- end table -->` in a page of PAGES is regenerated from a
results file; tests/test_readme.py fails when a page differs from what this script writes.

    python benchmarks/readme_tables.py           # rewrite the blocks
    python benchmarks/readme_tables.py --check   # exit 1 if any block is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
PAGES = [README, ROOT / "docs" / "arm.md"]
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)
# (row keys in real_model_quality.json, first one measured wins; recipe; what it needs; what it costs)
RECIPES = [
    ("bf16", "bf16", "nothing", "no quantization: the largest, slowest program"),
    ("ptq", "8da4w (plain PTQ)", "nothing", "seconds of quantizing"),
    ("spinquant had_gptq", "SpinQuant", "calibration text; a GPU at 1B/3B", "rotation optimization and GPTQ"),
    ("qat_lora", "QAT + LoRA", "training data; a GPU at 1B/3B", "a fine-tune; float adapters in the .pte"),
]


def table_after(path: Path, marker: str) -> str:
    """A markdown file and a line that starts with `marker` -> the first table after that line."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[first:end])


def recipes() -> str:
    """Each recipe's needs and cost, with its headline numbers on the real model."""
    data = json.loads((RESULTS / "real_model_quality.json").read_text())
    rows = {r["key"]: r for r in data["models"]["grid"]}
    out = [
        "| recipe | needs | costs | top-1 agreement / mean KL vs fp32 (SmolLM2-135M) |",
        "|---|---|---|---|",
    ]
    for keys, name, needs, cost in RECIPES:
        key = next((k for k in keys.split() if k in rows), None)  # a later key: the row measured in its place
        r = rows.get(key)
        measured = "not measured" if r is None else f"{r['top1_agreement']:.1%} / {r['mean_kl']:.3f}"
        if r is not None and key != keys.split()[0]:
            measured += f" ({r['row']})"
        out.append(f"| {name} | {needs} | {cost} | {measured} |")
    return "\n".join(out)


def arm_tie_fix() -> str:
    """The Arm check before and after the layer-0 tie fix: per program, the worst of the emulated cores."""
    runs = [json.loads((RESULTS / f"arm_check{s}.json").read_text())["rows"] for s in ("_before_tie_fix", "")]

    def worst(rows, program):
        mine = [r for r in rows if r["program"] == program]
        return min(r["sqnr_db"] for r in mine), max(r["mean_kl"] for r in mine), min(r["argmax_agree"] for r in mine)

    out = [
        "| export | SQNR vs x86, before → after | KL(x86 ‖ Arm), before → after | argmax in 32, before → after |",
        "|---|---|---|---|",
    ]
    for program in ("fixture_spinquant", "fixture_spinquant_no_r4", "fixture_8da4w"):
        (s0, k0, a0), (s1, k1, a1) = (worst(rows, program) for rows in runs)
        out.append(f"| {program} | {s0:.1f} → {s1:.1f} dB | {k0:.2e} → {k1:.2e} | {a0} → {a1} |")
    return "\n".join(out)


def blocks() -> dict[str, str]:
    comparison = RESULTS / "executorch_comparison_1b.md"
    return {
        "recipes": recipes(),
        "real-model": table_after(RESULTS / "real_model_quality.md", "## grid:"),
        "executorch-export": table_after(comparison, "## Export"),
        "executorch-ratios": table_after(comparison, "Ratios to ExecuTorch"),
        "arm-tie-fix": arm_tie_fix(),
    }


def synced(text: str) -> str:
    """README text -> the same text with every block regenerated; an unknown block name is an error."""
    tables = blocks()

    def fill(m: re.Match) -> str:
        return m.group(1) + tables[m.group("name")] + "\n" + m.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str]) -> int:
    stale = []
    for page in PAGES:
        text = page.read_text()
        new = synced(text)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if "--check" not in argv:
                page.write_text(new)
    if stale and "--check" in argv:
        print(f"stale tables in {', '.join(map(str, stale))}: run python benchmarks/readme_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
