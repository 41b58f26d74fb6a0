"""The benchmark session: for each device, each .pte and each prompt length, one warm-up and N
measured runs of the runner, with a cool-down before each run.

In:  `BenchConfig`, the targets (`android_bench.targets`), a `Progress` for stderr.
Out: `BenchResult` with one `RunRecord` per run (failures included) and the faults, one line
     each. Faults never lose what was measured before them:
       runner crash, OOM kill, non-zero exit,         -> recorded with the tail of its stderr (or of
       unreadable output                                 its logcat lines); the next configuration goes on
       push failure, too little space, disconnect,    -> recorded; the next device goes on
       a runner that cannot run or lacks a flag
The runner's flags are asked once per device (`android_bench.runner_flags`); threads and cores
come from `android_bench.placement`; the reasons to distrust a run from `android_bench.checks`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from android_bench import HARNESS_VERSION
from android_bench.adb import DeviceDisconnected, PushFailed
from android_bench.checks import cool_down, exit_reason, last_error_line, output_warnings, run_warnings, tail
from android_bench.config import BenchConfig, BenchError
from android_bench.device import DeviceFacts
from android_bench.models import ModelSpec
from android_bench.observer import ObserverParseError, parse_observer, runner_logged_rss_mb
from android_bench.prompt import PromptBuilder
from android_bench.records import MIB, BenchResult, LogSource, Phase, RunRecord, Status, make_result
from android_bench.placement import Placement, big_cores, placement
from android_bench.runner_flags import RunFlags, run_flags
from android_bench.runtimes import (
    Runtime,
    command,
    genai_config_with_threads,
    model_files,
    parse_llama_perf,
    parse_model_benchmark,
)
from android_bench.script import RunCommand, RunOutput, run_script
from android_bench.host_target import HostTarget
from android_bench.targets import AndroidTarget
from edge.core.progress import Progress



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
        self._runs = 0  # run ids: each run writes its own output files

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
        phase: Phase, index: int, place: Placement, chosen: RunFlags, runner_name: str, runner_flags: str,
        parse=parse_observer, runner_build: str | None = None,
    ) -> RunRecord:
        """Cool down, read the thermal state, run, read it again -> the run's record (appended)."""
        cfg = self.config
        cool = cool_down(read=target.thermal, below_c=cfg.cooldown_temp_c, timeout_s=cfg.cooldown_timeout_s, poll_s=cfg.cooldown_poll_s)
        if cool.seconds >= 1:
            self.progress.info(f"cooled down for {cool.seconds:.0f} s" + (" (timed out)" if cool.timed_out else ""))
        before = cool.thermal
        timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        t0 = time.monotonic()
        pte_mb = model.pte_bytes / MIB
        common = dict(
            facts=facts, target=target.kind.value, target_id=target.id, label=model.label, scheme=model.scheme,
            pte=str(model.pte), pte_sha256=model.pte_sha256, pte_mb=pte_mb, tokenizer=str(model.tokenizer),
            runner=runner_name, runner_flags=runner_flags, length_flag=chosen.length_flag.value, ignore_eos=chosen.ignore_eos,
            prompt_tokens_requested=n, max_new_tokens=cfg.max_new_tokens, threads=place.threads,
            cpu_mask=place.mask, phase=phase.value, run_index=index, timestamp=timestamp, cooldown_s=round(cool.seconds, 3),
            cooldown_timed_out=cool.timed_out, thermal_status_before=before.thermal_status,
            battery_temp_c_before=before.battery_temp_c, cpu_temp_c_before=before.cpu_temp_c,
            charging_before=before.charging, plugged=before.plugged, runtime=model.runtime.value, runner_build=runner_build,
        )
        try:
            out: RunOutput = target.execute(script, timeout=cfg.run_timeout_s)
        except DeviceDisconnected as e:
            rec = self._record(**common, status=Status.FAILED.value, error=str(e), wall_s=round(time.monotonic() - t0, 3))
            self.records.append(rec)
            raise
        wall = round(time.monotonic() - t0, 3)
        after = target.thermal()
        source = LogSource.STDERR if out.stderr.strip() else LogSource.LOGCAT  # Android builds log to logcat only
        logs = out.stderr if source is LogSource.STDERR else out.logcat
        kb_mb = lambda kb: None if kb is None else round(kb / 1024, 2)  # noqa: E731
        measured = dict(
            thermal_status_after=after.thermal_status, battery_temp_c_after=after.battery_temp_c,
            cpu_temp_c_after=after.cpu_temp_c, charging_after=after.charging,
            peak_rss_mb=kb_mb(out.peak_rss_kb), rss_mb=kb_mb(out.rss_kb), rss_samples=out.rss_samples,
            runner_logged_rss_mb=runner_logged_rss_mb(logs + out.stdout),
            runner_threads=out.threads_max, cpus_allowed=out.cpus_allowed, cpuset=out.cpuset,
            mem_avail_mb_before=kb_mb(out.mem_avail_kb_before), mem_avail_mb_after=kb_mb(out.mem_avail_kb_after),
            log_source=source.value if logs.strip() else None,
            exit_code=out.exit_code, wall_s=wall,
        )
        error = None
        if out.timed_out:
            error = f"the runner did not finish within {cfg.run_timeout_s:g} s"
        elif not out.completed:
            error = f"the run ended without the runner's exit status ({last_error_line(out.transport_stderr) or 'no message'})"
        elif out.exit_code != 0:
            error = f"{exit_reason(out.exit_code)}: {last_error_line(logs) or 'no message on stderr or in logcat'}"
        if error is None:
            try:
                stats = parse(out.stdout + "\n" + logs)
            except (ObserverParseError, BenchError) as e:
                error = f"cannot parse the runner's output: {e}"
        if error is not None:
            rec = self._record(**common, **measured, status=Status.FAILED.value, error=error,
                               stderr_tail=tail(logs or out.transport_stderr))
            self.records.append(rec)
            return rec
        warnings = run_warnings(before=before, after=after, cool=cool, max_rise_c=cfg.max_temp_rise_c, below_c=cfg.cooldown_temp_c)
        if stats.prefill_tok_s is None or stats.decode_tok_s is None:
            warnings.append("prefill or decode took under the runner's 1 ms clock: its rate is left out")
        if out.peak_rss_kb is None:
            warnings.append("no RSS sample: the runner exited before the first one")
        if stats.prompt_tokens != n:
            warnings.append(f"the runner counted {stats.prompt_tokens} prompt tokens, not {n}")
        warnings += output_warnings(generated=stats.generated_tokens, asked=cfg.max_new_tokens, ignore_eos=chosen.ignore_eos,
                                    peak_rss_mb=measured["peak_rss_mb"], pte_mb=pte_mb, leftover_pid=out.leftover_killed)
        if place.note:
            warnings.append(f"--pin-big-cores: {place.note}")
        rec = self._record(
            **common, **measured, status=Status.OK.value,
            observer_form=stats.form, observer_json=stats.raw_json, prompt_tokens=stats.prompt_tokens,
            generated_tokens=stats.generated_tokens, model_load_s=stats.model_load_s, ttft_s=stats.ttft_s,
            prefill_tok_s=stats.prefill_tok_s, decode_tok_s=stats.decode_tok_s,
            reported_prefill_tok_s=stats.reported_prefill_tok_s, reported_decode_tok_s=stats.reported_decode_tok_s,
            warnings=warnings,
        )
        self.records.append(rec)
        return rec

    # -- one configuration -----------------------------------------------------------------
    def measure_model(self, *, target: AndroidTarget | HostTarget, facts: DeviceFacts, model: ModelSpec) -> None:
        """Every prompt length of one model on one target (faults of the runner are recorded)."""
        if model.runtime is not Runtime.EXECUTORCH:
            return self.measure_runtime(target=target, facts=facts, model=model)
        cfg = self.config
        builder = self._builder(model.tokenizer)
        text_tokens = {n: n for n in cfg.prompt_tokens}
        prompts = {n: self._prompt_file(model, n, n) for n in cfg.prompt_tokens}
        label_dir = re.sub(r"[^A-Za-z0-9._-]+", "_", model.label)
        staged = target.stage(label_dir=label_dir, pte=model.pte, tokenizer=model.tokenizer, prompts=prompts, runner=cfg.runner)
        runner = target.runner_flags(staged)
        place = placement(facts=facts, threads=cfg.threads, taskset=cfg.taskset, pin_big_cores=cfg.pin_big_cores)
        if len({m.runtime for m in self.models}) > 1:  # beside other runtimes: the same thread count, passed explicitly
            place = _same_threads(place, facts)
        runner_name = cfg.runner.name if cfg.runner is not None else "android_bench.host_runner"
        build = target.runner_build(Runtime.EXECUTORCH, staged)
        if model is self.models[0]:
            self.progress.info(f"{target.id}: runner {runner_name}: {runner.describe()}")
        for n in cfg.prompt_tokens:
            name = f"{target.id} · {model.label} · prompt {n}"
            failed = False
            chosen = run_flags(runner=runner, length_flag=cfg.length_flag, prompt_tokens=n, max_new_tokens=cfg.max_new_tokens,
                               threads=place.threads)
            for phase, count in ((Phase.WARMUP, cfg.warmup), (Phase.MEASURED, cfg.repetitions)):
                for i in range(1, count + 1):
                    command = RunCommand(
                        runner=staged.runner, model_path=staged.model_path, tokenizer_path=staged.tokenizer_path,
                        prompt_file=staged.prompt_files[n], flags=chosen.flags, prompt_as_file=chosen.prompt_as_file,
                        prefix=("taskset", place.mask) if place.mask else (),
                    )
                    self._runs += 1
                    script = run_script(workdir=staged.workdir, command=command, interval_s=cfg.rss_interval_s,
                                        run_id=f"{os.getpid()}-{self._runs}")
                    rec = self.run_once(target=target, facts=facts, model=model, n=n, script=script, phase=phase, index=i,
                                        place=place, chosen=chosen, runner_name=runner_name, runner_flags=runner.describe(),
                                        runner_build=build)
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

    def measure_runtime(self, *, target: AndroidTarget | HostTarget, facts: DeviceFacts, model: ModelSpec) -> None:
        """Every prompt length of an ONNX model (onnxruntime-genai) or a .gguf (llama.cpp) on one target:
        the same prompts, threads, cores, cool-down and sampling of /proc as for a .pte."""
        cfg = self.config
        place = placement(facts=facts, threads=cfg.threads, taskset=cfg.taskset, pin_big_cores=cfg.pin_big_cores)
        place = _same_threads(place, facts)
        prompts = {n: self._prompt_file(model, n, n) for n in cfg.prompt_tokens}
        label_dir = re.sub(r"[^A-Za-z0-9._-]+", "_", model.label)
        files, model_rel = self._runtime_files(model, threads=place.threads)
        runner = cfg.onnx_runner if model.runtime is Runtime.ONNXRUNTIME else cfg.llamacpp_runner
        try:
            staged = target.stage_runtime(label_dir=label_dir, runtime=model.runtime, files=files, model_rel=model_rel,
                                          prompts=prompts, runner=runner)
            build = target.runner_build(model.runtime, staged)
        except BenchError as e:  # no runner for this runtime: the other models go on
            self.faults.append(f"{target.id} · {model.label}: {e}")
            self.progress.info(f"error: {target.id} · {model.label}: {e}")
            return
        self.progress.info(f"{target.id}: {model.runtime.value} runner {staged.runner} ({build})")
        parse = parse_model_benchmark if model.runtime is Runtime.ONNXRUNTIME else parse_llama_perf
        chosen = RunFlags(flags=(), prompt_as_file=True, ignore_eos=True, length_flag=cfg.length_flag)
        for n in cfg.prompt_tokens:
            name = f"{target.id} · {model.label} · prompt {n}"
            for phase, count in ((Phase.WARMUP, cfg.warmup), (Phase.MEASURED, cfg.repetitions)):
                failed = False
                for i in range(1, count + 1):
                    words = command(model.runtime, runner=staged.runner, model=staged.model_path, prompt_file=staged.prompt_files[n],
                                    new_tokens=cfg.max_new_tokens, threads=place.threads, context=2 * n + cfg.max_new_tokens + 16)
                    cmd = RunCommand(runner=staged.runner, model_path=staged.model_path, tokenizer_path="", prompt_file=staged.prompt_files[n],
                                     flags=(), words=words, prefix=("taskset", place.mask) if place.mask else ())
                    self._runs += 1
                    script = run_script(workdir=staged.workdir, command=cmd, interval_s=cfg.rss_interval_s, run_id=f"{os.getpid()}-{self._runs}")
                    rec = self.run_once(target=target, facts=facts, model=model, n=n, script=script, phase=phase, index=i, place=place,
                                        chosen=chosen, runner_name=staged.runner, runner_flags=model.runtime.value, parse=parse,
                                        runner_build=build)
                    self.progress.info(f"{name} · {phase.value} {i}/{count} · " + _brief(rec))
                    if not rec.ok:
                        self.faults.append(f"{name}: {rec.error}")
                        failed = True
                        break
                    if phase is Phase.WARMUP and i == 1 and rec.prompt_tokens and rec.prompt_tokens != n:
                        # This runner's tokenizer counts differently (a BOS of its own): rebuild the prompt once.
                        want = n - (rec.prompt_tokens - n)
                        if want >= 1:
                            prompts[n] = self._prompt_file(model, want, n)
                            staged = target.stage_runtime(label_dir=label_dir, runtime=model.runtime, files=files,
                                                          model_rel=model_rel, prompts=prompts, runner=runner)
                            self.progress.info(f"{name} · the runner counted {rec.prompt_tokens} prompt tokens; prompt rebuilt")
                if failed:
                    break

    def _runtime_files(self, model: ModelSpec, *, threads: int | None) -> tuple[dict[str, Path], str]:
        """-> (files to stage, by path relative to the model's folder; the model's path among them).

        An ONNX folder is staged with its genai_config.json rewritten to the run's thread count
        (model_benchmark has no thread flag); the other files are the export's own.
        """
        if model.runtime is Runtime.LLAMACPP:
            return {model.pte.name: model.pte}, model.pte.name
        local = self.tmp / re.sub(r"[^A-Za-z0-9._-]+", "_", model.label) / "onnx"
        local.mkdir(parents=True, exist_ok=True)
        files = {}
        for f in model_files(model.pte):
            if f.name == "genai_config.json":
                (local / f.name).write_text(genai_config_with_threads(f.read_text(), threads))
                f = local / f.name
            files[f"onnx/{f.name}"] = f
        return files, "onnx"

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


def _same_threads(place: Placement, facts: DeviceFacts) -> Placement:
    """No --threads: ExecuTorch's own default, one thread per core that is not little, made explicit.

    onnxruntime-genai's default differs (on the 2-core host it ran one thread, at half the speed), so
    when runtimes are compared every runner is given this count.
    """
    if place.threads is not None:
        return place
    return dataclasses.replace(place, threads=len(big_cores(facts)[0]) or None)


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _brief(rec: RunRecord) -> str:
    """A run record -> one progress line."""
    if not rec.ok:
        return f"FAILED: {rec.error}"
    f = _fmt
    return (
        f"decode {f(rec.decode_tok_s, '.1f')} tok/s, TTFT {f(rec.ttft_s, '.3f')} s, prefill {f(rec.prefill_tok_s, '.1f')} tok/s, "
        f"RSS {f(rec.peak_rss_mb, '.0f')} MiB" + (f" ⚠ {'; '.join(rec.warnings)}" if rec.warnings else "")
    )
