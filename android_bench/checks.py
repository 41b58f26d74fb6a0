"""Cool-down, and the reasons a run's numbers cannot be trusted or why it failed.

In:  thermal readings around a run, the run's output, its record's numbers.
Out: `cool_down(...)`, warnings (one line each, on the record and in the table) and the one-line
     reason a run failed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from android_bench.device import Thermal

STDERR_TAIL_CHARS = 2000
SIGNALS = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 7: "SIGBUS", 4: "SIGILL", 8: "SIGFPE", 15: "SIGTERM"}
RSS_FAR_BELOW_PTE = 0.5  # peak RSS under this share of the .pte: the process measured is not the runner


@dataclass(frozen=True)
class CoolDown:
    seconds: float
    timed_out: bool
    thermal: Thermal  # the last reading (the state the run starts in)


def cool_down(
    *,
    read: Callable[[], Thermal],
    below_c: float,
    timeout_s: float,
    poll_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> CoolDown:
    """Wait until the temperature is below `below_c` or `timeout_s` has passed.

    An unknown temperature (no sensor) does not wait."""
    start = clock()
    while True:
        t = read()
        temp = t.temp_c
        if temp is None or temp < below_c:
            return CoolDown(seconds=clock() - start, timed_out=False, thermal=t)
        if clock() - start >= timeout_s:
            return CoolDown(seconds=clock() - start, timed_out=True, thermal=t)
        sleep(poll_s)


def run_warnings(
    *, before: Thermal, after: Thermal | None, cool: CoolDown, max_rise_c: float, below_c: float
) -> list[str]:
    """Thermal readings around one run -> the reasons not to trust it."""
    out = []
    # Some phones report status 1 (light) at idle: only a rise during the run counts.
    if after is not None and after.thermal_status is not None and after.thermal_status > (before.thermal_status or 0):
        out.append(
            f"THROTTLED: thermal status rose to {after.thermal_status} during the run (was {before.thermal_status})"
        )
    if after is not None and before.battery_temp_c is not None and after.battery_temp_c is not None:
        rise = after.battery_temp_c - before.battery_temp_c
        if rise > max_rise_c:
            out.append(f"battery temperature rose {rise:.1f} °C during the run (limit {max_rise_c:g})")
    if cool.timed_out and cool.thermal.temp_c is not None:
        out.append(f"cool-down timed out at {cool.thermal.temp_c:.1f} °C (wanted < {below_c:g})")
    return out


def tail(text: str) -> str:
    return text[-STDERR_TAIL_CHARS:].strip()


def exit_reason(code: int) -> str:
    """An exit status -> what happened (adbd shields shell children from lmkd, so an out-of-memory
    runner dies by the kernel's OOM killer: SIGKILL, exit 137)."""
    if code == 126:
        return "the runner cannot be executed here (exit 126: built for another CPU architecture, or not executable)"
    if code == 127:
        return "the runner was not found (exit 127)"
    signal = code - 128 if code > 128 else -code
    if signal == 9:
        return f"the runner was killed (SIGKILL{f', exit {code}' if code > 0 else ''}), likely out of memory"
    if signal in SIGNALS:
        return f"the runner crashed ({SIGNALS[signal]}{f', exit {code}' if code > 0 else ''})"
    return f"the runner exited with status {code}"


def last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    marked = re.compile(r"^(E |E\d|ERROR|Error|error|Exception|\[.*\] .*(Fail|Error))")
    errors = [ln for ln in lines if marked.match(ln) or "Failed" in ln or "failed" in ln]
    return (errors or lines or [""])[-1][:200]


def output_warnings(
    *, generated: int, asked: int, ignore_eos: bool, peak_rss_mb: float | None, pte_mb: float, leftover_pid: int | None
) -> list[str]:
    """A finished run's numbers -> the reasons not to trust them."""
    out = []
    # ExecuTorch's runner counts decode steps: the prefill's token is not in generated_tokens.
    if generated + 1 < asked:
        why = "the context is full" if ignore_eos else "the runner stopped at EOS (it has no --ignore_eos)"
        out.append(
            f"SHORT: the runner stopped after {generated + 1} of {asked} new tokens ({why}); "
            "decode rates of runs of different lengths are not comparable"
        )
    if peak_rss_mb is not None and peak_rss_mb < RSS_FAR_BELOW_PTE * pte_mb:
        out.append(
            f"peak RSS {peak_rss_mb:.0f} MiB is far below the .pte's {pte_mb:.0f} MiB: the process measured "
            "is likely a wrapper (a --runner script without exec), not the runner"
        )
    if leftover_pid is not None:
        out.append(f"a runner left from an earlier run (pid {leftover_pid}) was still running; it was killed first")
    return out
