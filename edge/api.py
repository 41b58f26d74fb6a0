"""edge's Python API: `edge.export(...)`, `edge.finetune(...)`, `edge.evaluate(...)`, `edge.generate(...)`.

Each takes what its command line takes and returns the result object the command prints:

    import edge
    result = edge.export("llama3_2_1b_8da4w", checkpoint="Llama-3.2-1B-Instruct", output="out/1b")
    result.pte, result.pte_bytes, result.stage_seconds             # ExportResult
    edge.evaluate(result.pte, reference="Llama-3.2-1B-Instruct", text="heldout.txt").mean_kl  # EvalResult
    edge.finetune("llama3_2_1b_qat_lora", checkpoint=..., data="chats.jsonl", output="out/ft")  # its folder
    edge.generate(result.output_dir, "Hello!").text                 # Generation

`config` is a shipped config's name, a YAML path or an `ExportConfig`; keyword overrides use the YAML's keys,
sections as dicts (`quantization={"group_size": 64}`). Bad input raises `edge.core.errors.EdgeError`, with the
message the command line prints; progress goes to stderr unless `quiet=True`.

Each package makes itself callable (`edge.core.callable`), with the function in its own `api.py`, so
`python -m edge.export` and `edge.export(...)` are the same thing; `import edge` loads none of them until used.
"""

from edge.evaluate.api import evaluate
from edge.export.api import export
from edge.finetune.api import finetune
from edge.generate.api import generate

__all__ = ["evaluate", "export", "finetune", "generate"]
