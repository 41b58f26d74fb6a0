"""One run's fields for its `RunRecord`, why it failed, the reasons to distrust its numbers, its progress line.

In:  what `android_bench.bench.Session.run_once` knows of a run: the target and its `DeviceFacts`, the model, the
     flags, threads and cores, the cool-down, the run script's `RunOutput` and the thermal state after it.
Out: keyword fields of `RunRecord` (settings, measurements, the runner's numbers), the record itself, the one-line
     reason a run failed, its warnings, and one progress line per record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from android_bench import HARNESS_VERSION
from android_bench.checks import CoolDown, exit_reason, last_error_line, output_warnings
from android_bench.config import BenchError
from android_bench.device import DeviceFacts, Thermal
from android_bench.device_script import RunOutput
from android_bench.host_target import HostTarget
from android_bench.model_specs import ModelSpec
from android_bench.observer import ObserverParseError, runner_logged_rss_mb
from android_bench.placement import Placement
from android_bench.records import MIB, LogSource, Phase, RunRecord
from android_bench.runner_flags import RunFlags
from android_bench.targets import AndroidTarget


def device_record(**kw) -> RunRecord:
    """A run's fields, `facts` (DeviceFacts) among them -> its RunRecord (plus the device's fields, harness version)."""
    facts: DeviceFacts = kw.pop("facts")
    return RunRecord(
        device_model=facts.model,
        manufacturer=facts.manufacturer,
        soc=facts.soc,
        hardware=facts.hardware,
        os_version=facts.os_version,
        sdk=facts.sdk,
        abi=facts.abi,
        n_cores=facts.n_cores,
        cpu_max_freq_mhz=list(facts.cpu_max_freq_mhz),
        mem_total_gb=facts.mem_total_gb,
        harness_version=HARNESS_VERSION,
        **kw,
    )


def run_settings(
    *,
    target: AndroidTarget | HostTarget,
    facts: DeviceFacts,
    model: ModelSpec,
    n: int,
    phase: Phase,
    index: int,
    place: Placement,
    chosen: RunFlags,
    runner_name: str,
    runner_flags: str,
    runner_build: str | None,
    max_new_tokens: int,
    timestamp: str,
    cool: CoolDown,
) -> dict[str, Any]:
    """What a run was asked to do and the state it started in -> its RunRecord fields (`facts` among them)."""
    before = cool.thermal
    pte_mb = model.pte_bytes / MIB
    return dict(
        facts=facts,
        target=target.kind.value,
        target_id=target.id,
        label=model.label,
        scheme=model.scheme,
        pte=str(model.pte),
        pte_sha256=model.pte_sha256,
        pte_mb=pte_mb,
        tokenizer=str(model.tokenizer),
        runner=runner_name,
        runner_flags=runner_flags,
        length_flag=chosen.length_flag.value,
        ignore_eos=chosen.ignore_eos,
        prompt_tokens_requested=n,
        max_new_tokens=max_new_tokens,
        threads=place.threads,
        cpu_mask=place.mask,
        phase=phase.value,
        run_index=index,
        timestamp=timestamp,
        cooldown_s=round(cool.seconds, 3),
        cooldown_timed_out=cool.timed_out,
        thermal_status_before=before.thermal_status,
        battery_temp_c_before=before.battery_temp_c,
        cpu_temp_c_before=before.cpu_temp_c,
        charging_before=before.charging,
        plugged=before.plugged,
        runtime=model.runtime.value,
        runner_build=runner_build,
    )


def measured_fields(out: RunOutput, *, after: Thermal, logs: str, source: LogSource, wall: float) -> dict[str, Any]:
    """A finished run script's output, the thermal state after it, its log lines -> its measured RunRecord fields."""
    kb_mb = lambda kb: None if kb is None else round(kb / 1024, 2)  # noqa: E731
    return dict(
        thermal_status_after=after.thermal_status,
        battery_temp_c_after=after.battery_temp_c,
        cpu_temp_c_after=after.cpu_temp_c,
        charging_after=after.charging,
        peak_rss_mb=kb_mb(out.peak_rss_kb),
        rss_mb=kb_mb(out.rss_kb),
        rss_samples=out.rss_samples,
        runner_logged_rss_mb=runner_logged_rss_mb(logs + out.stdout),
        runner_threads=out.threads_max,
        cpus_allowed=out.cpus_allowed,
        cpuset=out.cpuset,
        mem_avail_mb_before=kb_mb(out.mem_avail_kb_before),
        mem_avail_mb_after=kb_mb(out.mem_avail_kb_after),
        log_source=source.value if logs.strip() else None,
        exit_code=out.exit_code,
        wall_s=wall,
    )


def stats_fields(stats: Any) -> dict[str, Any]:
    """The runner's parsed numbers -> their RunRecord fields."""
    return dict(
        observer_form=stats.form,
        observer_json=stats.raw_json,
        prompt_tokens=stats.prompt_tokens,
        generated_tokens=stats.generated_tokens,
        model_load_s=stats.model_load_s,
        ttft_s=stats.ttft_s,
        prefill_tok_s=stats.prefill_tok_s,
        decode_tok_s=stats.decode_tok_s,
        reported_prefill_tok_s=stats.reported_prefill_tok_s,
        reported_decode_tok_s=stats.reported_decode_tok_s,
    )


def run_error(out: RunOutput, logs: str, parse: Callable[[str], Any], *, timeout_s: float) -> tuple[str | None, Any]:
    """A finished run script's output -> (why the run failed, or None; the runner's numbers when it did not)."""
    if out.timed_out:
        return f"the runner did not finish within {timeout_s:g} s", None
    if not out.completed:
        return (
            f"the run ended without the runner's exit status ({last_error_line(out.transport_stderr) or 'no message'})"
        ), None
    if out.exit_code != 0:
        return f"{exit_reason(out.exit_code)}: {last_error_line(logs) or 'no message on stderr or in logcat'}", None
    try:
        return None, parse(out.stdout + "\n" + logs)
    except (ObserverParseError, BenchError) as e:
        return f"cannot parse the runner's output: {e}", None


def stats_warnings(
    stats: Any,
    *,
    out: RunOutput,
    n: int,
    chosen: RunFlags,
    place: Placement,
    pte_mb: float,
    peak_rss_mb: float | None,
    max_new_tokens: int,
) -> list[str]:
    """A successful run's numbers -> the reasons to distrust them (one line each)."""
    warnings = []
    if stats.prefill_tok_s is None or stats.decode_tok_s is None:
        warnings.append("prefill or decode took under the runner's 1 ms clock: its rate is left out")
    if out.peak_rss_kb is None:
        warnings.append("no RSS sample: the runner exited before the first one")
    if stats.prompt_tokens != n:
        warnings.append(f"the runner counted {stats.prompt_tokens} prompt tokens, not {n}")
    warnings += output_warnings(
        generated=stats.generated_tokens,
        asked=max_new_tokens,
        ignore_eos=chosen.ignore_eos,
        peak_rss_mb=peak_rss_mb,
        pte_mb=pte_mb,
        leftover_pid=out.leftover_killed,
    )
    if place.note:
        warnings.append(f"--pin-big-cores: {place.note}")
    return warnings


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def brief(rec: RunRecord) -> str:
    """A run record -> one progress line."""
    if not rec.ok:
        return f"FAILED: {rec.error}"
    f = _fmt
    return (
        f"decode {f(rec.decode_tok_s, '.1f')} tok/s, TTFT {f(rec.ttft_s, '.3f')} s, "
        f"prefill {f(rec.prefill_tok_s, '.1f')} tok/s, "
        f"RSS {f(rec.peak_rss_mb, '.0f')} MiB" + (f" ⚠ {'; '.join(rec.warnings)}" if rec.warnings else "")
    )
