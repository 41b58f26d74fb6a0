"""The benchmark session: for each device, each .pte and each prompt length, one warm-up and N
measured runs of the runner, with a cool-down before each run.

In:  `BenchConfig`, the targets (`android_bench.targets`), a `Progress` for stderr.
Out: `BenchResult` with one `RunRecord` per run (failures included) and the faults, one line
     each. Faults never lose what was measured before them:
       runner crash, non-zero exit, unreadable output -> recorded with the tail of its stderr;
                                                         the next configuration goes on
       push failure, too little space, disconnect     -> recorded; the next device goes on
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from android_bench import HARNESS_VERSION
from android_bench.adb import DeviceDisconnected, PushFailed
from android_bench.config import BenchConfig, BenchError, LengthFlag
from android_bench.device import DeviceFacts, Thermal
from android_bench.observer import ObserverParseError, parse_observer, runner_logged_rss_mb
from android_bench.prompt import PromptBuilder
from android_bench.records import MIB, BenchResult, Phase, RunRecord, Status, make_result
from android_bench.targets import AndroidTarget, HostTarget, RunCommand, RunOutput, cpu_mask, run_script
from edge.progress import Progress

STDERR_TAIL_CHARS = 2000
SIGNALS = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 7: "SIGBUS", 4: "SIGILL", 8: "SIGFPE", 15: "SIGTERM"}


@dataclass(frozen=True)
class ModelSpec:
    """One --pte: what it is and where its tokenizer is."""

    label: str
    pte: Path
    tokenizer: Path
    pte_bytes: int
    pte_sha256: str
    scheme: str  # bf16 | fp32 | 8da4w | ... (from its manifest.json) | unknown


def scheme_from_manifest(manifest: dict) -> str:
    """edge's manifest.json -> 'bf16', 'fp32', '8da4w', '8da4w-g64' or a spelled-out scheme."""
    config = manifest.get("config", {})
    q = config.get("quantization", {}) or {}
    dtype = config.get("dtype", "fp32")
    linear, output, embedding = q.get("linear", "none"), q.get("output", "none"), q.get("embedding", "none")
    if (linear, output, embedding) == ("none", "none", "none"):
        return str(dtype)
    if (linear, output, embedding) == ("int4", "int8", "int8"):
        gs = q.get("group_size", 32)
        return "8da4w" if gs == 32 else f"8da4w-g{gs}"
    return f"linear:{linear},output:{output},embedding:{embedding}"


def describe_models(config: BenchConfig) -> list[ModelSpec]:
    """--pte (and --label, --tokenizer) -> ModelSpecs (BenchError when a tokenizer is missing)."""
    from edge.io import sha256_file

    specs = []
    for i, pte in enumerate(config.pte):
        manifest_path = pte.parent / "manifest.json"
        manifest: dict = {}
        if manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, json.JSONDecodeError):
                manifest = {}
        label = config.label[i] if config.label else (pte.parent.name if pte.stem == "model" else pte.stem)
        tokenizer = config.tokenizer
        if tokenizer is None:
            found = [pte.parent / n for n in ("tokenizer.json", "tokenizer.model") if (pte.parent / n).is_file()]
            if not found:
                raise BenchError(f"no tokenizer.json or tokenizer.model beside {pte} (pass --tokenizer FILE)")
            tokenizer = found[0]
        specs.append(
            ModelSpec(
                label=label,
                pte=pte,
                tokenizer=tokenizer,
                pte_bytes=pte.stat().st_size,
                pte_sha256=sha256_file(pte),
                scheme=scheme_from_manifest(manifest) if manifest else ("bf16" if "bf16" in label.lower() else "unknown"),
            )
        )
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise BenchError(f"two .pte files get the same label ({', '.join(labels)}); name them with --label")
    return specs


def pick_baseline(config: BenchConfig, models: list[ModelSpec]) -> str | None:
    """--baseline, else the first bf16 unquantized model, else None (no ratios)."""
    if config.baseline is not None:
        if config.baseline not in [m.label for m in models]:
            raise BenchError(f"baseline {config.baseline!r} is not one of the models ({', '.join(m.label for m in models)})")
        return config.baseline
    return next((m.label for m in models if m.scheme == "bf16"), None)


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


def run_warnings(*, before: Thermal, after: Thermal | None, cool: CoolDown, max_rise_c: float, below_c: float) -> list[str]:
    """Thermal readings around one run -> the reasons not to trust it."""
    out = []
    if after is not None and after.thermal_status is not None and after.thermal_status > 0:
        out.append(f"THROTTLED: thermal status {after.thermal_status} after the run (was {before.thermal_status})")
    if after is not None and before.battery_temp_c is not None and after.battery_temp_c is not None:
        rise = after.battery_temp_c - before.battery_temp_c
        if rise > max_rise_c:
            out.append(f"battery temperature rose {rise:.1f} °C during the run (limit {max_rise_c:g})")
    if cool.timed_out and cool.thermal.temp_c is not None:
        out.append(f"cool-down timed out at {cool.thermal.temp_c:.1f} °C (wanted < {below_c:g})")
    return out


def _tail(text: str) -> str:
    return text[-STDERR_TAIL_CHARS:].strip()


def _exit_reason(code: int) -> str:
    if code > 128 and code - 128 in SIGNALS:
        return f"the runner crashed ({SIGNALS[code - 128]}, exit {code})"
    if code < 0 and -code in SIGNALS:
        return f"the runner crashed ({SIGNALS[-code]})"
    return f"the runner exited with status {code}"


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^(E |E\d|ERROR|Error|error|\[.*\] .*(Fail|Error))", ln) or "Failed" in ln or "failed" in ln]
    return (errors or lines or [""])[-1][:200]


class Session:
    """One benchmark session over all targets; collects records as it goes."""

    def __init__(self, *, config: BenchConfig, models: list[ModelSpec], progress: Progress) -> None:
        self.config = config
        self.models = models
        self.progress = progress
        self.records: list[RunRecord] = []
        self.faults: list[str] = []
        self.devices: dict[str, DeviceFacts] = {}
        self.started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.tmp = Path(tempfile.mkdtemp(prefix="android_bench_"))
        self._builders: dict[Path, PromptBuilder] = {}

    # -- prompts ---------------------------------------------------------------------------
    def _builder(self, tokenizer: Path) -> PromptBuilder:
        if tokenizer not in self._builders:
            self._builders[tokenizer] = PromptBuilder(tokenizer)
        return self._builders[tokenizer]

    def _prompt_file(self, model: ModelSpec, n_text: int, n_requested: int) -> Path:
        path = self.tmp / model.label.replace("/", "_") / f"prompt_{n_requested}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._builder(model.tokenizer).text(n_text), encoding="utf-8")
        return path

    # -- one run ---------------------------------------------------------------------------
    def _record(self, **kw) -> RunRecord:
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

    def run_once(
        self, *, target: AndroidTarget | HostTarget, facts: DeviceFacts, model: ModelSpec, n: int, script: str,
        phase: Phase, index: int, threads: int | None, mask: str | None, runner_name: str,
    ) -> RunRecord:
        """Cool down, read the thermal state, run, read it again -> the run's record (appended)."""
        cfg = self.config
        cool = cool_down(read=target.thermal, below_c=cfg.cooldown_temp_c, timeout_s=cfg.cooldown_timeout_s, poll_s=cfg.cooldown_poll_s)
        if cool.seconds >= 1:
            self.progress.info(f"cooled down for {cool.seconds:.0f} s" + (" (timed out)" if cool.timed_out else ""))
        before = cool.thermal
        timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        t0 = time.monotonic()
        common = dict(
            facts=facts, target=target.kind.value, target_id=target.id, label=model.label, scheme=model.scheme,
            pte=str(model.pte), pte_sha256=model.pte_sha256, pte_mb=model.pte_bytes / MIB, tokenizer=str(model.tokenizer),
            runner=runner_name, prompt_tokens_requested=n, max_new_tokens=cfg.max_new_tokens, threads=threads,
            cpu_mask=mask, phase=phase.value, run_index=index, timestamp=timestamp, cooldown_s=round(cool.seconds, 3),
            cooldown_timed_out=cool.timed_out, thermal_status_before=before.thermal_status,
            battery_temp_c_before=before.battery_temp_c, cpu_temp_c_before=before.cpu_temp_c,
            charging_before=before.charging, plugged=before.plugged,
        )
        try:
            out: RunOutput = target.execute(script, timeout=cfg.run_timeout_s)
        except DeviceDisconnected as e:
            rec = self._record(**common, status=Status.FAILED.value, error=str(e), wall_s=round(time.monotonic() - t0, 3))
            self.records.append(rec)
            raise
        wall = round(time.monotonic() - t0, 3)
        after = target.thermal()
        thermal_after = dict(
            thermal_status_after=after.thermal_status, battery_temp_c_after=after.battery_temp_c,
            cpu_temp_c_after=after.cpu_temp_c, charging_after=after.charging,
        )
        mem = dict(
            peak_rss_mb=None if out.peak_rss_kb is None else round(out.peak_rss_kb / 1024, 2),
            rss_mb=None if out.rss_kb is None else round(out.rss_kb / 1024, 2),
            rss_samples=out.rss_samples,
            runner_logged_rss_mb=runner_logged_rss_mb(out.stderr + out.stdout),
        )
        error = None
        if out.timed_out:
            error = f"the runner did not finish within {cfg.run_timeout_s:g} s"
        elif not out.completed:
            error = f"the run ended without the runner's exit status ({_last_error_line(out.transport_stderr) or 'no message'})"
        elif out.exit_code != 0:
            error = f"{_exit_reason(out.exit_code)}: {_last_error_line(out.stderr) or 'no message on stderr'}"
        if error is not None:
            rec = self._record(**common, **thermal_after, **mem, status=Status.FAILED.value, error=error,
                               exit_code=out.exit_code, stderr_tail=_tail(out.stderr or out.transport_stderr), wall_s=wall)
            self.records.append(rec)
            return rec
        try:
            stats = parse_observer(out.stdout + "\n" + out.stderr)
        except ObserverParseError as e:
            rec = self._record(**common, **thermal_after, **mem, status=Status.FAILED.value, error=f"cannot parse the runner's output: {e}",
                               exit_code=out.exit_code, stderr_tail=_tail(out.stderr), wall_s=wall)
            self.records.append(rec)
            return rec
        warnings = run_warnings(before=before, after=after, cool=cool, max_rise_c=cfg.max_temp_rise_c, below_c=cfg.cooldown_temp_c)
        if stats.prefill_tok_s is None or stats.decode_tok_s is None:
            warnings.append("prefill or decode took under the runner's 1 ms clock: its rate is left out")
        if out.peak_rss_kb is None:
            warnings.append("no RSS sample: the runner exited before the first one")
        if stats.prompt_tokens != n:
            warnings.append(f"the runner counted {stats.prompt_tokens} prompt tokens, not {n}")
        rec = self._record(
            **common, **thermal_after, **mem, status=Status.OK.value, exit_code=0, wall_s=wall,
            observer_form=stats.form, observer_json=stats.raw_json, prompt_tokens=stats.prompt_tokens,
            generated_tokens=stats.generated_tokens, model_load_s=stats.model_load_s, ttft_s=stats.ttft_s,
            prefill_tok_s=stats.prefill_tok_s, decode_tok_s=stats.decode_tok_s,
            reported_prefill_tok_s=stats.reported_prefill_tok_s, reported_decode_tok_s=stats.reported_decode_tok_s,
            warnings=warnings,
        )
        self.records.append(rec)
        return rec

    # -- one configuration -----------------------------------------------------------------
    def _placement(self, facts: DeviceFacts) -> tuple[int | None, str | None]:
        """-> (--cpu_threads value or None, taskset mask or None)."""
        cfg = self.config
        if cfg.taskset is not None:
            return cfg.threads, cfg.taskset.lower().removeprefix("0x")
        if cfg.pin_big_cores:
            big = facts.big_cores()
            if big:
                return (cfg.threads if cfg.threads is not None else len(big)), cpu_mask(big)
        return cfg.threads, None

    def measure_model(self, *, target: AndroidTarget | HostTarget, facts: DeviceFacts, model: ModelSpec) -> None:
        """Every prompt length of one model on one target (faults of the runner are recorded)."""
        cfg = self.config
        builder = self._builder(model.tokenizer)
        text_tokens = {n: n for n in cfg.prompt_tokens}
        prompts = {n: self._prompt_file(model, n, n) for n in cfg.prompt_tokens}
        label_dir = re.sub(r"[^A-Za-z0-9._-]+", "_", model.label)
        staged = target.stage(label_dir=label_dir, pte=model.pte, tokenizer=model.tokenizer, prompts=prompts, runner=cfg.runner)
        threads, mask = self._placement(facts)
        runner_name = cfg.runner.name if cfg.runner is not None else "android_bench.host_runner"
        for n in cfg.prompt_tokens:
            name = f"{target.id} · {model.label} · prompt {n}"
            failed = False
            for phase, count in ((Phase.WARMUP, cfg.warmup), (Phase.MEASURED, cfg.repetitions)):
                for i in range(1, count + 1):
                    flags: list[tuple[str, str]] = [("--temperature", "0")]
                    if cfg.length_flag is LengthFlag.MAX_NEW_TOKENS:
                        flags.append(("--max_new_tokens", str(cfg.max_new_tokens)))
                    else:
                        flags.append(("--seq_len", str(n + cfg.max_new_tokens)))
                    if threads is not None:
                        flags.append(("--cpu_threads", str(threads)))
                    command = RunCommand(
                        runner=staged.runner, model_path=staged.model_path, tokenizer_path=staged.tokenizer_path,
                        prompt_file=staged.prompt_files[n], flags=tuple(flags), prefix=("taskset", mask) if mask else (),
                    )
                    script = run_script(workdir=staged.workdir, command=command, interval_s=cfg.rss_interval_s)
                    rec = self.run_once(target=target, facts=facts, model=model, n=n, script=script, phase=phase, index=i,
                                        threads=threads, mask=mask, runner_name=runner_name)
                    self.progress.info(f"{name} · {phase.value} {i}/{count} · " + _brief(rec))
                    if not rec.ok:
                        self.faults.append(f"{name}: {rec.error}")
                        failed = True
                        break
                    if phase is Phase.WARMUP and i == 1 and rec.prompt_tokens is not None and rec.prompt_tokens != n:
                        # The runner counts differently (BOS added, or an estimated tokenizer): rebuild once.
                        if builder.exact:
                            want = text_tokens[n] - (rec.prompt_tokens - n)
                        else:
                            want = max(1, round(text_tokens[n] * n / max(rec.prompt_tokens, 1)))
                        if want >= 1 and want != text_tokens[n]:
                            text_tokens[n] = want
                            path = self._prompt_file(model, want, n)
                            staged = target.stage(label_dir=label_dir, pte=model.pte, tokenizer=model.tokenizer,
                                                  prompts={**prompts, n: path}, runner=cfg.runner)
                            self.progress.info(f"{name} · the runner counted {rec.prompt_tokens} prompt tokens; prompt rebuilt")
                if failed:
                    break

    def run(self, targets: list[AndroidTarget | HostTarget]) -> None:
        """Every target in turn; device-level faults end that device, never the session."""
        for target in targets:
            try:
                facts = target.facts()
                self.devices[target.id] = facts
                self.progress.info(
                    f"{target.id}: {facts.model}, {facts.os_version}, {facts.soc or facts.hardware or '?'}, "
                    f"{facts.n_cores or '?'} cores"
                )
                for model in self.models:
                    self.measure_model(target=target, facts=facts, model=model)
            except (DeviceDisconnected, PushFailed) as e:
                self.faults.append(str(e))
                self.progress.info(f"error: {e}")
            except BenchError as e:
                self.faults.append(f"{target.id}: {e}")
                self.progress.info(f"error: {e}")

    def close(self) -> None:
        """Remove the session's temporary prompt files."""
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)

    def result(self, *, baseline: str | None) -> BenchResult:
        from dataclasses import asdict

        return make_result(
            records=self.records, baseline=baseline, faults=self.faults, started=self.started,
            config=self.config.to_dict(), devices={k: asdict(v) for k, v in self.devices.items()},
        )


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _brief(rec: RunRecord) -> str:
    """A run record -> one progress line."""
    if not rec.ok:
        return f"FAILED: {rec.error}"
    f = _fmt
    return (
        f"decode {f(rec.decode_tok_s, '.1f')} tok/s, TTFT {f(rec.ttft_s, '.3f')} s, prefill {f(rec.prefill_tok_s, '.1f')} tok/s, "
        f"RSS {f(rec.peak_rss_mb, '.0f')} MB" + (f" ⚠ {'; '.join(rec.warnings)}" if rec.warnings else "")
    )
