"""Which flags a `llama_main` has, asked once per runner, and the flags a run passes.

In:  what the runner prints for gflags' `--helpshort` (and `--help` when `--helpshort` lists
     none of its flags: gflags keeps to flags from a file named like the program, and
     llama_main's are in main.cpp). gflags prints help on stdout and exits 1.
Out: `RunnerFlags` (the flag names), and `run_flags(...)`: the length flag, the prompt flag and
     `--ignore_eos` chosen for that runner.

ExecuTorch's llama_main by release: `--seq_len` always; `--max_new_tokens` from v1.1 (a v1.0.x
runner fails with "unknown command line flag" when given it); `--prompt_file` and
`--ignore_eos` from v1.2. Without `--ignore_eos` two models can stop at different lengths, and
their decode rates are then not comparable.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from android_bench.config import BenchError, LengthFlag

HELP_PROBES = ("--helpshort", "--help")
SPLIT = "@@EDGE_SPLIT"  # between the probes' outputs in one shell call
CANNOT_RUN = ("not executable", "Exec format error", "not found", "Permission denied", "CANNOT LINK EXECUTABLE")
_FLAG = re.compile(r"^\s+-(\w+) \(", re.M)  # gflags: "    -max_new_tokens (Maximum ...) type: int32 default: -1"


@dataclass(frozen=True)
class RunnerFlags:
    """The flags one runner takes; `known` is False when its help listed none (not gflags)."""

    names: frozenset[str]
    known: bool

    def has(self, name: str) -> bool:
        """Unknown runners are taken to have every flag (the flags the user asked for are passed)."""
        return name in self.names if self.known else True

    def describe(self) -> str:
        if not self.known:
            return "flags unknown (its --helpshort and --help list none)"
        have = [f for f in ("max_new_tokens", "seq_len", "prompt_file", "ignore_eos") if f in self.names]
        if not have:
            return "has none of --max_new_tokens, --seq_len, --prompt_file, --ignore_eos"
        return "has --" + ", --".join(have)


def parse_gflags_help(text: str) -> frozenset[str]:
    """gflags' help text -> the flag names it lists."""
    return frozenset(_FLAG.findall(text))


def flags_from_probes(texts: list[str]) -> RunnerFlags:
    """The outputs of the probes in HELP_PROBES order -> RunnerFlags (first one that lists model_path)."""
    for text in texts:
        names = parse_gflags_help(text)
        if "model_path" in names:
            return RunnerFlags(names=names, known=True)
    return RunnerFlags(names=frozenset(), known=False)


def probe_script(*, workdir: str, runner: str) -> str:
    """Shell line asking RUNNER for its flags with each of HELP_PROBES (gflags exits 1 after help)."""
    asks = [f"{runner} {probe} 2>&1 < /dev/null" for probe in HELP_PROBES]
    return f"cd {shlex.quote(workdir)} || exit 97; " + f"; echo {SPLIT}; ".join(asks) + "; true"


def flags_from_probe_output(text: str, *, where: str) -> RunnerFlags:
    """probe_script's output -> RunnerFlags; BenchError when the runner cannot run there at all."""
    flags = flags_from_probes(text.split(SPLIT))
    if not flags.known:
        bad = next((ln.strip() for ln in text.splitlines() if any(s in ln for s in CANNOT_RUN)), None)
        if bad:
            raise BenchError(f"the runner cannot run on {where}: {bad[:200]}")
    return flags


@dataclass(frozen=True)
class RunFlags:
    flags: tuple[tuple[str, str | None], ...]
    prompt_as_file: bool
    ignore_eos: bool
    length_flag: LengthFlag


def run_flags(
    *, runner: RunnerFlags, length_flag: LengthFlag, prompt_tokens: int, max_new_tokens: int, threads: int | None
) -> RunFlags:
    """The flags after the prompt for one run (BenchError when the runner lacks an asked-for flag)."""
    if length_flag is LengthFlag.AUTO:
        length_flag = LengthFlag.MAX_NEW_TOKENS if runner.has("max_new_tokens") else LengthFlag.SEQ_LEN
    if not runner.has(length_flag.value):
        raise BenchError(
            f"the runner has no --{length_flag.value} (ExecuTorch before 1.1 has only --seq_len); "
            "pass --length-flag auto or seq_len"
        )
    flags: list[tuple[str, str | None]] = [("--temperature", "0")]
    if length_flag is LengthFlag.MAX_NEW_TOKENS:
        flags.append(("--max_new_tokens", str(max_new_tokens)))
    else:
        flags.append(("--seq_len", str(prompt_tokens + max_new_tokens)))
    ignore_eos = runner.known and runner.has("ignore_eos")
    if ignore_eos:
        flags.append(("--ignore_eos", None))
    if threads is not None:
        flags.append(("--cpu_threads", str(threads)))
    return RunFlags(
        flags=tuple(flags),
        prompt_as_file=runner.known and runner.has("prompt_file"),
        ignore_eos=ignore_eos,
        length_flag=length_flag,
    )
