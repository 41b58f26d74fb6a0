"""`python -m edge.generate OUT/model.pte --prompt "..."` (also an ONNX folder or a .gguf)

In:  an exported model, a prompt; --chat / --no-chat (default: the model's chat template when it has one),
     --max-new-tokens, --temperature (0: greedy), --json.
Out: the text on stdout as it is decoded; prefill and decode tok/s on stderr; exit 2 with one line for bad input.
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
        prog="python -m edge.generate",
        description="Text from an exported model on this machine, in the runtime a phone runs it with.",
    )
    p.add_argument("model", type=Path, help="model.pte (or its folder), an ONNX folder, or a .gguf")
    p.add_argument("--prompt", required=True, help="the user's message (or raw text with --no-chat)")
    p.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="apply the model's chat template (default: when the export has one, e.g. an Instruct checkpoint)",
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="default 128")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy")
    p.add_argument("--json", type=Path, help="also write the result (text, token counts, tok/s) here")
    ns = p.parse_args(argv)

    def work() -> int:
        from edge.generate import generate

        if ns.json:
            check_output_path(ns.json, what="--json")
        result = generate(
            ns.model, ns.prompt, chat=ns.chat, max_new_tokens=ns.max_new_tokens, temperature=ns.temperature
        )
        print(flush=True)
        print(result.speed_line(), file=sys.stderr)
        if ns.json:
            write_text_atomic(ns.json, json.dumps(result.to_dict(), indent=2) + "\n")
        return 0

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
