"""How a model runs in its runtime: what the one measurement loop (`android_bench.bench.Session.measure_prompts`)
is given for ExecuTorch's llama_main and for the ONNX Runtime and llama.cpp runners alike.

In:  the staged files (`StagedConfig`), a prompt length, the runner's flags, the thread placement.
Out: `RunPlan` (command builder, output parser, prompt-rebuild rule, restaging), the two command builders
     (`executorch_command`, `runtime_command`) and the rebuild rule (`rebuilt_length`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from android_bench.device_script import RunCommand, StagedConfig
from android_bench.placement import Placement
from android_bench.runner_flags import RunFlags
from android_bench.runners import Runtime, command


@dataclass(frozen=True)
class RunPlan:
    """How one model runs in its runtime, for the one measurement loop (`Session.measure_prompts`).

    flags    prompt length -> the runner's flags for it (length flag, --ignore_eos, prompt as a file)
    command  (staged files, prompt length, flags) -> the runner's command for one run
    parse    the runner's stdout and log lines -> its numbers (ObserverStats or RuntimeStats)
    rebuild  (prompt tokens the runner counted, tokens asked) -> the text length to rebuild the prompt from, or None
    restage  the prompt files by prompt length -> the staged files once a prompt was rebuilt
    """

    runner_name: str
    runner_flags: str
    build: str | None
    flags: Callable[[int], RunFlags]
    command: Callable[[StagedConfig, int, RunFlags], RunCommand]
    parse: Callable[[str], Any]
    rebuild: Callable[[int | None, int], int | None]
    restage: Callable[[dict[int, Path]], StagedConfig]


def rebuilt_length(counted: int | None, n: int, *, exact: bool) -> int | None:
    """The first warm-up's count of an n-token prompt -> the text length to build the prompt from instead, or None
    (the count matches, or says nothing). An exact tokenizer: n less the runner's extra tokens (a BOS of its own);
    an estimated one: n scaled by n / counted."""
    if not counted or counted == n:
        return None
    want = n - (counted - n) if exact else max(1, round(n * n / counted))
    return want if want >= 1 and want != n else None


def executorch_command(staged: StagedConfig, n: int, chosen: RunFlags, *, prefix: tuple[str, ...]) -> RunCommand:
    """llama_main (or android_bench.host_runner) on the n-token prompt with the chosen flags."""
    return RunCommand(
        runner=staged.runner,
        model_path=staged.model_path,
        tokenizer_path=staged.tokenizer_path,
        prompt_file=staged.prompt_files[n],
        flags=chosen.flags,
        prompt_as_file=chosen.prompt_as_file,
        prefix=prefix,
    )


def runtime_command(
    staged: StagedConfig,
    n: int,
    chosen: RunFlags,
    *,
    runtime: Runtime,
    new_tokens: int,
    threads: int | None,
    prefix: tuple[str, ...],
) -> RunCommand:
    """model_benchmark or llama-completion on the n-token prompt (their flags come from `runners.command`)."""
    words = command(
        runtime,
        runner=staged.runner,
        model=staged.model_path,
        prompt_file=staged.prompt_files[n],
        new_tokens=new_tokens,
        threads=threads,
        context=2 * n + new_tokens + 16,
    )
    return RunCommand(
        runner=staged.runner,
        model_path=staged.model_path,
        tokenizer_path="",
        prompt_file=staged.prompt_files[n],
        flags=(),
        words=words,
        prefix=prefix,
    )


def taskset_prefix(place: Placement) -> tuple[str, ...]:
    """A placement -> the words before the runner: `taskset MASK`, or none."""
    return ("taskset", place.mask) if place.mask else ()
