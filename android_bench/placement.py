"""Which cores a run may use, and how many threads it starts.

In:  `DeviceFacts` (per-core "CPU part" ids from /proc/cpuinfo, online cores) and the config's
     `--threads`, `--taskset`, `--pin-big-cores`.
Out: `placement(...)` -> `Placement` (the `--cpu_threads` value or None, the taskset mask or None,
     and a note when the little cores had to be guessed).

ExecuTorch's own thread count (`--cpu_threads -1`, extension/threadpool/cpuinfo_utils.cpp)
counts every online core but those whose MIDR is a Cortex-A53, A55, A57, A510 or A520; so does
`--pin-big-cores`. An all-big SoC (e.g. 2 + 6 big cores at two clocks) keeps all its cores.
With a mask and no `--threads`, the thread count is the mask's size: the runner's default could
start more threads than the mask has cores.
"""

from __future__ import annotations

from dataclasses import dataclass

from android_bench.device import DeviceFacts

# ARM part numbers (MIDR bits 15:4, /proc/cpuinfo "CPU part") that cpuinfo_utils.cpp counts as little.
LITTLE_PARTS = {
    0xD03: "Cortex-A53",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD46: "Cortex-A510",
    0xD80: "Cortex-A520",
}


@dataclass(frozen=True)
class Placement:
    threads: int | None  # --cpu_threads (None: the runner chooses)
    mask: str | None  # taskset mask in hex
    note: str | None = None  # why the cores are a guess


def mask_cores(mask: str) -> tuple[int, ...]:
    """Hex taskset mask ('f0' or '0xf0') -> its core indices."""
    value = int(mask.lower().removeprefix("0x"), 16)
    return tuple(i for i in range(value.bit_length()) if value >> i & 1)


def cpu_mask(cores: tuple[int, ...]) -> str:
    """Core indices -> taskset's hexadecimal mask ('f0' for cores 4-7)."""
    return format(sum(1 << c for c in cores), "x")


def big_cores(facts: DeviceFacts) -> tuple[tuple[int, ...], str | None]:
    """Online cores that are not little -> (cores, note). Without part ids: the cores outside the
    slowest clock cluster, with a note saying it is a guess."""
    online = facts.online_cores()
    if facts.cpu_parts and all(c in facts.cpu_parts for c in online):
        big = tuple(c for c in online if facts.cpu_parts[c] not in LITTLE_PARTS)
        return (big or online), None
    freqs = {c: f for c, f in enumerate(facts.cpu_max_freq_mhz) if f is not None and c in online}
    if not freqs:
        return online, "no CPU part ids or clocks: all online cores"
    slow = min(freqs.values())
    big = tuple(c for c in online if freqs.get(c, slow) > slow)
    return (big or online), "no CPU part ids in /proc/cpuinfo: little cores guessed as the slowest clock cluster"


def placement(*, facts: DeviceFacts, threads: int | None, taskset: str | None, pin_big_cores: bool) -> Placement:
    """Config and device -> the thread count and mask of every run on it."""
    if taskset is not None:
        cores = mask_cores(taskset)
        return Placement(threads=threads if threads is not None else len(cores), mask=cpu_mask(cores))
    if pin_big_cores:
        cores, note = big_cores(facts)
        if cores:
            return Placement(threads=threads if threads is not None else len(cores), mask=cpu_mask(cores), note=note)
    return Placement(threads=threads, mask=None)
