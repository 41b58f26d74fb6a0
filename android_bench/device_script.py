"""The device-side run script and what it prints, taken apart.

In:  a `RunCommand` (the runner's words and flags) and a run id.
Out: `run_script(...)`: one POSIX sh line for Android's mksh and toybox (or the host's sh) that
       1. kills a runner left over from an interrupted run (its pid is in `runner.pid`),
       2. records MemAvailable and a logcat timestamp,
       3. starts the runner in the background, stdin from /dev/null, output in
          `run-<id>.out` / `run-<id>.err` (each run its own files), its pid in `runner.pid`,
       4. samples `/proc/<pid>/status` (VmHWM, VmRSS, Threads, Cpus_allowed_list) until it exits,
       5. prints its exit status, /proc/<pid>/cpuset, MemAvailable after, its stdout, the tail of
          its stderr and its `ExecuTorch` logcat lines (Android builds log there, not to stderr).
     `parse_run_output(text)` -> `RunOutput`. Every section sits between `@@EDGE_...` markers.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

PID, LEFTOVER, CPUSET, MEM, EXIT = "@@EDGE_PID", "@@EDGE_LEFTOVER", "@@EDGE_CPUSET", "@@EDGE_MEM", "@@EDGE_EXIT"
AVAIL_BEFORE, AVAIL_AFTER = "@@EDGE_AVAIL_BEFORE", "@@EDGE_AVAIL_AFTER"
STDOUT, STDERR, LOGCAT = "@@EDGE_STDOUT", "@@EDGE_STDERR", "@@EDGE_LOGCAT"
STDERR_TAIL_BYTES = 65536
LOGCAT_TAG = "ExecuTorch"  # runtime/platform/default/android.cpp: __android_log_print(level, "ExecuTorch", ...)
PID_FILE = "runner.pid"


@dataclass
class StagedConfig:
    """Where one configuration's files are, as seen from the work folder (what a target's `stage` returns)."""

    workdir: str
    runner: str
    model_path: str
    tokenizer_path: str
    prompt_files: dict[int, str] = field(default_factory=dict)  # prompt token count -> path


@dataclass(frozen=True)
class RunCommand:
    """A runner invocation, paths as the runner sees them from the work folder."""

    runner: str  # shell words for the runner (already quoted)
    model_path: str
    tokenizer_path: str
    prompt_file: str
    flags: tuple[tuple[str, str | None], ...]  # (--flag, value); value None: a bare boolean flag
    prompt_as_file: bool = False  # --prompt_file P (ExecuTorch >= 1.2) instead of --prompt "$(cat P)"
    prefix: tuple[str, ...] = ()  # e.g. ("taskset", "f0")
    words: str | None = None  # another runtime's runner: its whole command (android_bench.runners.command)

    def shell(self) -> str:
        """-> `[taskset MASK] RUNNER --model_path M --tokenizer_path T --prompt "$(cat P)" --flag v ...`"""
        if self.words is not None:
            return " ".join([*(shlex.quote(w) for w in self.prefix), self.words])
        words = [*(shlex.quote(w) for w in self.prefix), self.runner]
        words += ["--model_path", shlex.quote(self.model_path), "--tokenizer_path", shlex.quote(self.tokenizer_path)]
        if self.prompt_as_file:
            words += ["--prompt_file", shlex.quote(self.prompt_file)]
        else:
            words += ["--prompt", f'"$(cat {shlex.quote(self.prompt_file)})"']
        for flag, value in self.flags:
            words += [flag] if value is None else [flag, shlex.quote(value)]
        return " ".join(words)


def kill_leftover_command() -> str:
    """Shell words that kill the runner named in runner.pid, if it still runs (work folder is cwd)."""
    return (
        f"if [ -f {PID_FILE} ]; then old=$(cat {PID_FILE}); rm -f {PID_FILE};"
        ' if [ -n "$old" ] && grep -qE "model_path|input_folder|--model" /proc/$old/cmdline 2>/dev/null;'
        f' then kill -9 $old 2>/dev/null; echo "{LEFTOVER} $old"; fi; fi'
    )


def run_script(*, workdir: str, command: RunCommand, interval_s: float, run_id: str) -> str:
    """Runner command -> one sh line that runs it, samples it and prints the markers above."""
    status = "/proc/$pid/status"
    out, err = f"run-{run_id}.out", f"run-{run_id}.err"
    parts = [
        f"cd {shlex.quote(workdir)} || exit 97",
        kill_leftover_command(),
        "rm -f run-*.out run-*.err",
        f'echo "{AVAIL_BEFORE} $(grep MemAvailable /proc/meminfo)"',
        "t=$(date '+%m-%d %H:%M:%S.000')",
        f"{command.shell()} > {out} 2> {err} < /dev/null & pid=$!",
        f"echo $pid > {PID_FILE}",
        f'echo "{PID} $pid"',
        f'echo "{CPUSET} $(cat /proc/$pid/cpuset 2>/dev/null)"',
        f"while [ -e {status} ]; do"
        f" m=$(grep -E '^(State|VmHWM|VmRSS|Threads|Cpus_allowed_list):' {status} 2>/dev/null | tr -s ' \\t\\n' ' ');"
        f' case "$m" in ""|*"State: Z"*) break;; esac;'
        f' echo "{MEM} $m"; sleep {interval_s:g};'
        " done",
        "wait $pid",
        f'echo "{EXIT} $?"',
        f"rm -f {PID_FILE}",
        f'echo "{AVAIL_AFTER} $(grep MemAvailable /proc/meminfo)"',
        f'echo "{STDOUT}"',
        f"cat {out}",
        "echo",
        f'echo "{STDERR}"',
        f"tail -c {STDERR_TAIL_BYTES} {err}",
        "echo",
        f'echo "{LOGCAT}"',
        f'logcat -d -v threadtime -t "$t" -s {LOGCAT_TAG} 2>/dev/null | tail -c {STDERR_TAIL_BYTES}',
    ]
    return "; ".join(parts)


@dataclass(frozen=True)
class RunOutput:
    """What one run script printed, taken apart."""

    completed: bool  # the script reached its exit marker (False: transport died or timed out)
    exit_code: int | None
    pid: int | None
    stdout: str
    stderr: str
    peak_rss_kb: int | None
    rss_kb: int | None
    rss_samples: int
    transport_stderr: str = ""
    timed_out: bool = False
    logcat: str = ""  # the runner's own logcat messages (prefixes stripped)
    threads_max: int | None = None  # most threads the runner had at once (/proc/<pid>/status Threads)
    cpus_allowed: str | None = None  # Cpus_allowed_list: the cores taskset left it
    cpuset: str | None = None  # /proc/<pid>/cpuset: Android's cgroup (top-app, foreground, ...)
    mem_avail_kb_before: int | None = None
    mem_avail_kb_after: int | None = None
    leftover_killed: int | None = None  # pid of a runner left over from an earlier run, killed first


_MEM = re.compile(r"(VmHWM|VmRSS|Threads):\s*(\d+)")
_CPUS = re.compile(r"Cpus_allowed_list:\s*(\S+)")
_AVAIL = re.compile(r"MemAvailable:\s*(\d+)\s*kB")
# logcat -v threadtime: "11-24 03:38:16.123  1234  1240 I ExecuTorch: message"
_LOGCAT = re.compile(r"^\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+(\d+)\s+\d+\s+([VDIWEF])\s+" + LOGCAT_TAG + r"\s*: ?(.*)$")


def parse_logcat(text: str, *, pid: int | None) -> str:
    """threadtime lines -> 'LEVEL message' lines of the runner (those of `pid`; all of them when
    none is that pid's, as with a wrapper script whose child logs)."""
    lines = [(int(m.group(1)), f"{m.group(2)} {m.group(3)}") for m in map(_LOGCAT.match, text.splitlines()) if m]
    own = [msg for p, msg in lines if p == pid]
    return "\n".join(own or [msg for _, msg in lines])


def _int_after(line: str) -> int | None:
    value = line.split()[1] if len(line.split()) > 1 else ""
    return int(value) if value.lstrip("-").isdigit() else None


def parse_run_output(text: str, *, transport_stderr: str = "", timed_out: bool = False) -> RunOutput:
    """The run script's output -> RunOutput (peak RSS = the largest VmHWM sampled)."""
    found: dict[str, int | None] = {PID: None, EXIT: None, LEFTOVER: None}
    samples: dict[str, list[int]] = {"VmHWM": [], "VmRSS": [], "Threads": []}
    avail: dict[str, int | None] = {AVAIL_BEFORE: None, AVAIL_AFTER: None}
    cpus = cpuset = None
    n = 0
    head, _, rest = text.partition(f"\n{STDOUT}\n")
    for line in head.splitlines():
        key = line.split(" ", 1)[0]
        if key in found:
            found[key] = _int_after(line)
        elif key == MEM:
            n += 1
            for name, value in _MEM.findall(line):
                samples[name].append(int(value))
            m = _CPUS.search(line)
            cpus = m.group(1) if m else cpus
        elif key in avail:
            m = _AVAIL.search(line)
            avail[key] = int(m.group(1)) if m else None
        elif key == CPUSET:
            cpuset = line[len(CPUSET) :].strip() or None
    stdout, _, rest = rest.partition(f"\n{STDERR}\n")
    stderr, _, logcat = rest.partition(f"\n{LOGCAT}\n")
    return RunOutput(
        completed=found[EXIT] is not None,
        exit_code=found[EXIT],
        pid=found[PID],
        stdout=stdout,
        stderr=stderr.rstrip("\n") + "\n" if stderr.strip() else "",
        peak_rss_kb=max(samples["VmHWM"], default=None),
        rss_kb=max(samples["VmRSS"], default=None),
        rss_samples=n,
        transport_stderr=transport_stderr,
        timed_out=timed_out,
        logcat=parse_logcat(logcat, pid=found[PID]),
        threads_max=max(samples["Threads"], default=None),
        cpus_allowed=cpus,
        cpuset=cpuset,
        mem_avail_kb_before=avail[AVAIL_BEFORE],
        mem_avail_kb_after=avail[AVAIL_AFTER],
        leftover_killed=found[LEFTOVER],
    )
