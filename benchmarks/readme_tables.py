"""The README's tables, copied from benchmarks/results/ by this script, never by hand.

Each block in README.md between `<!-- table: NAME -->` and `<!-- end table -->` is regenerated from a results
file; tests/test_readme.py fails when the README differs from what this script writes.

    python benchmarks/readme_tables.py           # rewrite the blocks in README.md
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
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)
# recipe key in real_model_quality.json -> (recipe, what it needs, what it costs)
RECIPES = [
    ("bf16", "bf16", "nothing", "no quantization: the largest, slowest program"),
    ("ptq", "8da4w (plain PTQ)", "nothing", "seconds of quantizing"),
    ("spinquant", "SpinQuant", "calibration text; a GPU at 1B/3B", "rotation optimization and GPTQ"),
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
    """Each recipe's needs and cost, with its headline numbers on the real model's grid-free control."""
    data = json.loads((RESULTS / "real_model_quality.json").read_text())
    rows = {r["key"]: r for r in data["models"]["grid-free"]}
    out = [
        "| recipe | needs | costs | top-1 agreement / mean KL vs fp32 (SmolLM2-135M) |",
        "|---|---|---|---|",
    ]
    for key, name, needs, cost in RECIPES:
        r = rows[key]
        out.append(f"| {name} | {needs} | {cost} | {r['top1_agreement']:.1%} / {r['mean_kl']:.3f} |")
    return "\n".join(out)


def blocks() -> dict[str, str]:
    comparison = RESULTS / "executorch_comparison_1b.md"
    return {
        "recipes": recipes(),
        "real-model": table_after(RESULTS / "real_model_quality.md", "## grid-free"),
        "executorch-export": table_after(comparison, "## Export"),
        "executorch-ratios": table_after(comparison, "Ratios to ExecuTorch"),
    }


def synced(text: str) -> str:
    """README text -> the same text with every block regenerated; an unknown block name is an error."""
    tables = blocks()

    def fill(m: re.Match) -> str:
        return m.group(1) + tables[m.group("name")] + "\n" + m.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str]) -> int:
    text = README.read_text()
    new = synced(text)
    if "--check" in argv:
        if new != text:
            print("README.md tables are stale: run python benchmarks/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
