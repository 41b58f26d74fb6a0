"""A prompt -> text from an exported model, through the runtime a phone would run it with, and its speed.

In:  a .pte (with tokenizer.json / tokenizer.model and manifest.json beside it, as edge.export writes them),
     an ONNX folder (onnxruntime-genai, formats: onnx) or a .gguf (llama-cpp-python, formats: gguf);
     the prompt; chat or raw; how many tokens; temperature.
Out: `Generation`; the text streams to `on_text` as it is decoded.

The .pte runs in ExecuTorch's own `TextLLMRunner` (the C++ runner behind llama_main, through its Python
bindings): its tokenizer, prefill in chunks of the program's max_seq_len, KV cache, sampler and stop tokens.
The runner writes its tokens and logs straight to file descriptors 1 and 2: pte_runner.py streams the text from
its byte output (its token callback cannot take a token that splits a UTF-8 character).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from edge.core.errors import EdgeError
from edge.generate.chat import Prompt, build_prompt, special_text


@dataclass(frozen=True)
class Generation:
    text: str
    runtime: str
    chat: bool
    prompt_tokens: int
    generated_tokens: int
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    def speed_line(self) -> str:
        def rate(r: float | None) -> str:
            return "n/a" if r is None else f"{r:.1f} tok/s"

        return (
            f"{self.runtime}: prefill {self.prompt_tokens} tokens at {rate(self.prefill_tokens_per_s)}, "
            f"decode {self.generated_tokens} tokens at {rate(self.decode_tokens_per_s)}"
        )


def _rate(tokens: int, ms: float) -> float | None:
    return tokens / (ms / 1000) if ms > 0 and tokens > 0 else None


def generate_pte(
    pte: Path, prompt: Prompt, *, max_new_tokens: int, temperature: float, on_text: Callable[[str], None] | None
) -> Generation:
    """A .pte and its tokenizer -> Generation, from ExecuTorch's TextLLMRunner (see pte_runner.py)."""
    from edge.generate.pte_runner import run_pte

    text, s = run_pte(
        pte,
        tokenizer_beside(pte),
        prompt.text,
        add_bos=prompt.add_bos,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        on_text=on_text,
    )
    prefill_ms = (s.prompt_eval_end_ms - s.inference_start_ms) if s else 0
    decode_ms = (s.inference_end_ms - s.prompt_eval_end_ms) if s else 0
    return Generation(
        text=text,
        runtime="ExecuTorch TextLLMRunner",
        chat=prompt.chat,
        prompt_tokens=s.num_prompt_tokens if s else 0,
        # prefill yields the first token; the runner's count and decode clock cover the ones decoded after it
        generated_tokens=(s.num_generated_tokens + 1) if s else 0,
        prefill_tokens_per_s=_rate(s.num_prompt_tokens, prefill_ms) if s else None,
        decode_tokens_per_s=_rate(s.num_generated_tokens, decode_ms) if s else None,
    )


def tokenizer_in(folder: Path) -> Path | None:
    """An export folder -> its tokenizer.json or tokenizer.model, or None."""
    return next((folder / n for n in ("tokenizer.json", "tokenizer.model") if (folder / n).is_file()), None)


def tokenizer_beside(model: Path) -> Path:
    """A .pte -> the tokenizer the runner loads with it; EdgeError if there is none."""
    if (tokenizer := tokenizer_in(model.parent)) is None:
        raise EdgeError(f"no tokenizer.json or tokenizer.model beside {model} (edge.export writes one there)")
    return tokenizer


def generate_onnx(
    folder: Path, prompt: Prompt, *, max_new_tokens: int, temperature: float, on_text: Callable[[str], None] | None
) -> Generation:
    """An onnxruntime-genai folder (genai_config.json, model.onnx, tokenizer) -> Generation."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        raise EdgeError('ONNX models run in onnxruntime-genai: pip install -e ".[onnx]"') from None
    emit = on_text or print_piece
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    stream = tokenizer.create_stream()
    ids = list(tokenizer.encode(prompt.text))
    bos = json.loads((folder / "genai_config.json").read_text())["model"].get("bos_token_id")
    if prompt.add_bos and bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, int(bos))
    params = og.GeneratorParams(model)
    params.set_search_options(
        max_length=len(ids) + max_new_tokens, do_sample=temperature > 0, temperature=temperature or 1.0
    )
    generator = og.Generator(model, params)
    t0 = time.perf_counter()
    generator.append_tokens(ids)
    t1 = time.perf_counter()

    def decoded():
        while not generator.is_done():
            generator.generate_next_token()
            yield stream.decode(int(generator.get_next_tokens()[0]))

    pieces, _, end = _stream(decoded(), emit)
    return _generation("onnxruntime-genai", prompt, pieces, len(ids), t1 - t0, end - t1, decoded=len(pieces))


def generate_gguf(
    path: Path, prompt: Prompt, *, max_new_tokens: int, temperature: float, on_text: Callable[[str], None] | None
) -> Generation:
    """A .gguf -> Generation, from llama.cpp through llama-cpp-python (which adds BOS as the GGUF says)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise EdgeError("GGUF files run in llama.cpp: pip install llama-cpp-python") from None
    emit = on_text or print_piece
    llm = Llama(model_path=str(path), verbose=False, n_ctx=0)
    ids = llm.tokenize(prompt.text.encode(), add_bos=prompt.add_bos, special=True)
    t0 = time.perf_counter()
    chunks = llm.create_completion(ids, max_tokens=max_new_tokens, temperature=temperature, stream=True)
    pieces, first, end = _stream((c["choices"][0]["text"] for c in chunks), emit)
    first = first or end  # the first token comes out of prefill; the rest were decoded
    runtime = "llama.cpp (llama-cpp-python)"
    return _generation(runtime, prompt, pieces, len(ids), first - t0, end - first, decoded=len(pieces) - 1)


def print_piece(piece: str) -> None:
    """The default `on_text` of the Python runtimes: each piece to stdout as it comes."""
    print(piece, end="", flush=True)


def _stream(pieces: Iterator[str], emit: Callable[[str], None]) -> tuple[list[str], float | None, float]:
    """Text pieces as a runtime yields them -> (the pieces, when the first came, when the last did); each emitted."""
    out, first = [], None
    for piece in pieces:
        first = first or time.perf_counter()
        out.append(piece)
        emit(piece)
    return out, first, time.perf_counter()


def _generation(
    runtime: str,
    prompt: Prompt,
    pieces: list[str],
    prompt_tokens: int,
    prefill_s: float,
    decode_s: float,
    *,
    decoded: int,
) -> Generation:
    return Generation(
        text="".join(pieces),
        runtime=runtime,
        chat=prompt.chat,
        prompt_tokens=prompt_tokens,
        generated_tokens=len(pieces),
        prefill_tokens_per_s=_rate(prompt_tokens, prefill_s * 1000),
        decode_tokens_per_s=_rate(decoded, decode_s * 1000),
    )


def locate(model: Path) -> tuple[str, Path, Path]:
    """What the user named -> (runtime kind, the path its runtime loads, the export folder with manifest.json)."""
    model = Path(model)
    if model.is_dir():
        if (model / "genai_config.json").is_file():
            return "onnx", model, model.parent
        if (model / "model.pte").is_file():
            return "pte", model / "model.pte", model
        if (model / "onnx" / "genai_config.json").is_file():
            return "onnx", model / "onnx", model
    elif model.is_file():
        if model.suffix == ".pte":
            return "pte", model, model.parent
        if model.suffix == ".gguf":
            return "gguf", model, model.parent
        if model.name == "model.onnx" and (model.parent / "genai_config.json").is_file():
            return "onnx", model.parent, model.parent.parent
    raise EdgeError(f"{model}: not a .pte, an ONNX folder (genai_config.json) or a .gguf, nor a folder holding one")


def generate(
    model: Path,
    prompt: str,
    *,
    chat: bool | None = None,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    on_text: Callable[[str], None] | None = None,
) -> Generation:
    """(an exported model, a prompt; chat: None = the model's default) -> Generation, the text streamed to
    `on_text` (default: stdout) as it is decoded."""
    if not prompt:
        raise EdgeError("the prompt is empty")
    if max_new_tokens < 1:
        raise EdgeError(f"max new tokens must be at least 1, not {max_new_tokens}")
    if temperature < 0:
        raise EdgeError(f"temperature must be 0 (greedy) or more, not {temperature}")
    kind, path, folder = locate(model)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    bos_id = (manifest.get("runner_metadata") or {}).get("get_bos_id")
    tokenizer = tokenizer_in(folder)  # edge.export writes it at the top of the folder, whatever the formats
    bos_text = special_text(tokenizer, bos_id) if tokenizer is not None else None
    built = build_prompt(folder, manifest, prompt, chat=chat, bos_text=bos_text)
    run = {"pte": generate_pte, "onnx": generate_onnx, "gguf": generate_gguf}[kind]
    return run(path, built, max_new_tokens=max_new_tokens, temperature=temperature, on_text=on_text)
