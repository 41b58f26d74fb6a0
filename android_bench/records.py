"""Flat records, one per run, and their summary per configuration.

In:  `RunRecord`s written by `android_bench.bench` (one per warm-up or measured run, failed runs
     included, with the tail of the runner's stderr).
Out: `ConfigSummary` per (device, model, prompt length): median, min and max of each metric over
     the measured runs that succeeded, the raw samples, and the warnings; `ratio()` against the
     bf16 baseline row of the same device and prompt length, as in Meta's model card table.

A configuration is identified by (target_id, label, prompt_tokens_requested). MB are 2**20
bytes (MiB), as the model card's `.pte MB` (Llama 3.2 1B BF16 = 2358).
"""

from __future__ import annotations

import dataclasses
import enum
import statistics
from dataclasses import dataclass, field
from typing import Any

MIB = 1 << 20


class Phase(enum.Enum):
    WARMUP = "warmup"
    MEASURED = "measured"


class Status(enum.Enum):
    OK = "ok"
    FAILED = "failed"


class LogSource(enum.Enum):
    """Where the runner's log lines were found: stderr, or logcat (Android's log backend)."""

    STDERR = "stderr"
    LOGCAT = "logcat"


class Metric(enum.Enum):
    """The measured quantities, in the model card's column order (model load last, not in the card)."""

    DECODE = "decode_tok_s"
    TTFT = "ttft_s"
    PREFILL = "prefill_tok_s"
    PTE = "pte_mb"
    RSS = "peak_rss_mb"
    LOAD = "model_load_s"

    @property
    def header(self) -> str:
        return {
            Metric.DECODE: "decode tok/s",
            Metric.TTFT: "TTFT s",
            Metric.PREFILL: "prefill tok/s",
            Metric.PTE: "model MiB",
            Metric.RSS: "RSS MiB",
            Metric.LOAD: "load s",
        }[self]

    @property
    def higher_is_better(self) -> bool:
        return self in (Metric.DECODE, Metric.PREFILL)

    @property
    def v3_name(self) -> str:
        """Metric name in the PyTorch benchmark v3 rows (ExecuTorch's dashboard style: unit in brackets)."""
        return {
            Metric.DECODE: "token_per_sec",
            Metric.TTFT: "ttft(ms)",
            Metric.PREFILL: "prefill_token_per_sec",
            Metric.PTE: "pte_size(mb)",
            Metric.RSS: "peak_rss_mem_usage(mb)",
            Metric.LOAD: "llm_model_load_time(ms)",
        }[self]

    @property
    def v3_scale(self) -> float:
        """Factor from the record's unit to the v3 metric's unit (seconds -> ms)."""
        return 1000.0 if self in (Metric.TTFT, Metric.LOAD) else 1.0


CARD_METRICS = (Metric.DECODE, Metric.TTFT, Metric.PREFILL, Metric.PTE, Metric.RSS)


@dataclass(frozen=True)
class RunRecord:
    """One run, flat: parameters, device facts, results, thermal state, warnings."""

    # what ran
    target: str  # android | host
    target_id: str  # serial, or "host"
    label: str
    scheme: str
    pte: str
    pte_sha256: str
    pte_mb: float
    tokenizer: str
    runner: str
    prompt_tokens_requested: int
    max_new_tokens: int
    threads: int | None
    cpu_mask: str | None
    phase: str  # Phase value
    run_index: int  # 1-based within its phase
    timestamp: str  # ISO 8601, UTC, at the start of the run
    # device facts
    device_model: str
    manufacturer: str | None
    soc: str | None
    hardware: str | None
    os_version: str
    sdk: str | None
    abi: str | None
    n_cores: int | None
    cpu_max_freq_mhz: list[int | None]  # indexed by core; None: no cpufreq folder (offline)
    mem_total_gb: float | None
    # outcome
    status: str  # Status value
    error: str | None = None
    exit_code: int | None = None
    stderr_tail: str | None = None
    wall_s: float | None = None
    # results (from the PyTorchObserver line and /proc/<pid>/status)
    observer_form: str | None = None  # current | old
    observer_json: str | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    model_load_s: float | None = None
    ttft_s: float | None = None
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None
    reported_prefill_tok_s: float | None = None
    reported_decode_tok_s: float | None = None
    peak_rss_mb: float | None = None
    rss_mb: float | None = None
    rss_samples: int = 0
    runner_logged_rss_mb: float | None = None
    # thermal state and cool-down
    cooldown_s: float | None = None
    cooldown_timed_out: bool | None = None
    thermal_status_before: int | None = None
    thermal_status_after: int | None = None
    battery_temp_c_before: float | None = None
    battery_temp_c_after: float | None = None
    cpu_temp_c_before: float | None = None
    cpu_temp_c_after: float | None = None
    charging_before: bool | None = None
    charging_after: bool | None = None
    plugged: bool | None = None
    # how the runner was called and where it ran
    runner_flags: str | None = None  # what its --helpshort listed
    runtime: str = "executorch"  # executorch | onnxruntime | llama.cpp (android_bench.runners.Runtime)
    runner_build: str | None = None  # the runner's build: package versions, llama.cpp's build line, or its sha256
    length_flag: str | None = None  # LengthFlag value used
    ignore_eos: bool | None = None
    runner_threads: int | None = None  # most threads at once (/proc/<pid>/status Threads)
    cpus_allowed: str | None = None  # Cpus_allowed_list (taskset's cores)
    cpuset: str | None = None  # /proc/<pid>/cpuset (Android's cgroup: /top-app, /foreground, ...)
    mem_avail_mb_before: float | None = None  # /proc/meminfo MemAvailable, MiB
    mem_avail_mb_after: float | None = None
    log_source: str | None = None  # LogSource value; None when the runner logged nothing
    warnings: list[str] = field(default_factory=list)
    harness_version: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def value(self, metric: Metric) -> float | None:
        return getattr(self, metric.value)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK.value

    @property
    def config_key(self) -> tuple[str, str, int]:
        return (self.target_id, self.label, self.prompt_tokens_requested)


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float
    samples: tuple[float, ...]


def stat(samples: list[float]) -> Stat | None:
    """Samples -> median (mean of the middle two for an even count), min, max; None when empty."""
    if not samples:
        return None
    return Stat(median=statistics.median(samples), min=min(samples), max=max(samples), samples=tuple(samples))


@dataclass(frozen=True)
class ConfigSummary:
    target: str
    target_id: str
    device_model: str
    label: str
    scheme: str
    prompt_tokens_requested: int
    max_new_tokens: int
    n_ok: int
    n_failed: int
    stats: dict[Metric, Stat | None]
    prompt_tokens: int | None  # what the runner reported (median)
    generated_tokens: int | None
    warnings: tuple[str, ...]
    error: str | None
    is_baseline: bool = False
    runtime: str = "executorch"
    runner_build: str | None = None

    def median(self, metric: Metric) -> float | None:
        s = self.stats.get(metric)
        return s.median if s is not None else None


def summarize(records: list[RunRecord], *, baseline: str | None) -> list[ConfigSummary]:
    """Run records -> one summary per configuration, in the order the configurations first ran."""
    groups: dict[tuple[str, str, int], list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.config_key, []).append(r)
    out = []
    for key, runs in groups.items():
        measured = [r for r in runs if r.phase == Phase.MEASURED.value]
        ok = [r for r in measured if r.ok]
        failed = [r for r in runs if not r.ok]
        stats = {m: stat([v for r in ok if (v := r.value(m)) is not None]) for m in Metric}
        warnings: list[str] = []
        for r in measured:
            for w in r.warnings:
                text = f"run {r.run_index}: {w}"
                if text not in warnings:
                    warnings.append(text)
        first = runs[0]
        pt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
        gt = [r.generated_tokens for r in ok if r.generated_tokens is not None]
        out.append(
            ConfigSummary(
                target=first.target,
                target_id=key[0],
                device_model=first.device_model,
                label=key[1],
                scheme=first.scheme,
                runtime=first.runtime,
                runner_build=next((r.runner_build for r in ok if r.runner_build), first.runner_build),
                prompt_tokens_requested=key[2],
                max_new_tokens=first.max_new_tokens,
                n_ok=len(ok),
                n_failed=len(failed),
                stats=stats,
                prompt_tokens=int(statistics.median(pt)) if pt else None,
                generated_tokens=int(statistics.median(gt)) if gt else None,
                warnings=tuple(warnings),
                error=failed[-1].error if failed else None,
                is_baseline=baseline is not None and key[1] == baseline,
            )
        )
    return out


def baseline_for(summary: ConfigSummary, summaries: list[ConfigSummary]) -> ConfigSummary | None:
    """The baseline row on the same device with the same prompt length (None if there is none)."""
    for s in summaries:
        same = s.target_id == summary.target_id and s.prompt_tokens_requested == summary.prompt_tokens_requested
        if s.is_baseline and same:
            return s
    return None


def ratio(summary: ConfigSummary, base: ConfigSummary | None, metric: Metric) -> float | None:
    """median / baseline median (2.6 = 2.6x; 0.231 = -76.9%); None without both medians."""
    if base is None:
        return None
    v, b = summary.median(metric), base.median(metric)
    if v is None or b is None or b == 0:
        return None
    return v / b


@dataclass(frozen=True)
class BenchResult:
    """Everything a writer needs: the records, their summaries, and what went wrong."""

    records: list[RunRecord]
    summaries: list[ConfigSummary]
    baseline: str | None
    faults: list[str]  # one line each; empty when every configuration measured
    started: str  # ISO 8601 UTC
    config: dict[str, Any]  # BenchConfig.to_dict()
    devices: dict[str, dict[str, Any]]  # target_id -> DeviceFacts as a dict


def make_result(
    *,
    records: list[RunRecord],
    baseline: str | None,
    faults: list[str],
    started: str,
    config: dict[str, Any],
    devices: dict[str, dict[str, Any]],
) -> BenchResult:
    """Records -> BenchResult with its summaries."""
    return BenchResult(
        records=list(records),
        summaries=summarize(records, baseline=baseline),
        baseline=baseline,
        faults=list(faults),
        started=started,
        config=config,
        devices=devices,
    )
