"""`python -m edge.evaluate --pte X.pte --reference CHECKPOINT --text FILE`

In:  the .pte (or an ONNX model: --model out/x/onnx), its reference checkpoint, held-out text; --context, --max-windows,
     --tokenizer, --json.
Out: a markdown table row on stdout (with its header), the result as JSON
     (default: evaluate.json beside the .pte, written atomically), progress on
     stderr; exit 2 with one line for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.core.cli import prologue, run_cli
from edge.core.io import check_output_path, write_text_atomic


def main(argv: list[str] | None = None) -> int:
    prologue()
    p = argparse.ArgumentParser(
        prog="python -m edge.evaluate",
        description="Perplexity, top-1 agreement and KL of a .pte or ONNX model against its reference checkpoint.",
    )
    p.add_argument(
        "--pte",
        "--model",
        dest="pte",
        type=Path,
        required=True,
        help="the .pte, or an ONNX model (the onnx/ folder edge.export wrote, or its model.onnx)",
    )
    p.add_argument("--reference", type=Path, required=True, help="the checkpoint the .pte was exported from")
    p.add_argument("--text", type=Path, required=True, help="held-out text (UTF-8)")
    p.add_argument("--context", type=int, default=256, help="tokens per window, BOS included (default 256)")
    p.add_argument("--max-windows", type=int, help="evaluate at most this many windows")
    p.add_argument("--tokenizer", type=Path, help="default: the reference checkpoint's")
    p.add_argument("--json", type=Path, help="default: evaluate.json beside the .pte")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)

    def work() -> int:
        from edge.core.progress import Progress
        from edge.evaluate import TABLE_HEADER, evaluate, table_row

        progress = Progress(quiet=ns.quiet)
        out = ns.json or (ns.pte if ns.pte.is_dir() else ns.pte.parent) / "evaluate.json"
        check_output_path(out, what="--json")
        with progress.stage("evaluate", f"{ns.pte} vs {ns.reference}"):
            result = evaluate(
                pte_path=ns.pte,
                reference=ns.reference,
                text_path=ns.text,
                context=ns.context,
                max_windows=ns.max_windows,
                tokenizer_path=ns.tokenizer,
                on_window=lambda d, t: progress.step(d, t, label="windows"),
            )
        write_text_atomic(out, json.dumps(result.to_dict(), indent=2) + "\n")
        print(TABLE_HEADER)
        print(table_row(result))
        progress.info(f"wrote {out}")
        return 0

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
