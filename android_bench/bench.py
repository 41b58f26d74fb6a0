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
come from `android_bench.placement`; the reasons to distrust a run from `android_bench.checks`, its record's
fields from `android_bench.run_outcome`.
Every runtime (ExecuTorch, ONNX Runtime, llama.cpp) is measured by one loop, `Session.measure_prompts`,
given the runtime's `RunPlan` (`android_bench.run_plan`: command builder, output parser, prompt-rebuild rule).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from android_bench.adb import DeviceDisconnected, PushFailed
from android_bench.checks import CoolDown, cool_down, run_warnings, tail
from android_bench.config import BenchConfig, BenchError
from android_bench.device import DeviceFacts
from android_bench.device_script import RunOutput, StagedConfig, run_script
from android_bench.host_target import HostTarget
from android_bench.model_specs import ModelSpec
from android_bench.observer import parse_observer
from android_bench.placement import Placement, big_cores, placement
from android_bench.prompt import PromptBuilder
from android_bench.records import BenchResult, LogSource, Phase, RunRecord, Status, make_result
from android_bench.run_outcome import (
    brief,
    device_record,
    measured_fields,
    run_error,
    run_settings,
    stats_fields,
    stats_warnings,
)
from android_bench.run_plan import RunPlan, executorch_command, rebuilt_length, runtime_command, taskset_prefix
from android_bench.runner_flags import RunFlags, run_flags
from android_bench.runners import (
    Runtime,
    genai_config_with_threads,
    model_files,
    parse_llama_perf,
    parse_model_benchmark,
)
from android_bench.targets import AndroidTarget
from edge.core.progress import Progress

AnyTarget = AndroidTarget | HostTarget


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
    def _cool_down(self, target: AnyTarget) -> CoolDown:
        """A target -> its cool-down before a run (its last thermal reading; a second or more is reported)."""
        cfg = self.config
        cool = cool_down(
            read=target.thermal,
            below_c=cfg.cooldown_temp_c,
            timeout_s=cfg.cooldown_timeout_s,
            poll_s=cfg.cooldown_poll_s,
        )
        if cool.seconds >= 1:
            self.progress.info(f"cooled down for {cool.seconds:.0f} s" + (" (timed out)" if cool.timed_out else ""))
        return cool

    def run_once(
        self,
        *,
        target: AnyTarget,
        facts: DeviceFacts,
        model: ModelSpec,
        n: int,
        script: str,
        phase: Phase,
        index: int,
        place: Placement,
        chosen: RunFlags,
        runner_name: str,
        runner_flags: str,
        parse=parse_observer,
        runner_build: str | None = None,
    ) -> RunRecord:
        """Cool down, read the thermal state, run, read it again -> the run's record (appended)."""
        cfg = self.config
        cool = self._cool_down(target)
        before = cool.thermal
        timestamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        t0 = time.monotonic()
        common = run_settings(
            target=target,
            facts=facts,
            model=model,
            n=n,
            phase=phase,
            index=index,
            place=place,
            chosen=chosen,
            runner_name=runner_name,
            runner_flags=runner_flags,
            runner_build=runner_build,
            max_new_tokens=cfg.max_new_tokens,
            timestamp=timestamp,
            cool=cool,
        )
        try:
            out: RunOutput = target.execute(script, timeout=cfg.run_timeout_s)
        except DeviceDisconnected as e:
            rec = device_record(
                **common, status=Status.FAILED.value, error=str(e), wall_s=round(time.monotonic() - t0, 3)
            )
            self.records.append(rec)
            raise
        wall = round(time.monotonic() - t0, 3)
        after = target.thermal()
        source = LogSource.STDERR if out.stderr.strip() else LogSource.LOGCAT  # Android builds log to logcat only
        logs = out.stderr if source is LogSource.STDERR else out.logcat
        measured = measured_fields(out, after=after, logs=logs, source=source, wall=wall)
        error, stats = run_error(out, logs, parse, timeout_s=cfg.run_timeout_s)
        if error is not None:
            rec = device_record(
                **common,
                **measured,
                status=Status.FAILED.value,
                error=error,
                stderr_tail=tail(logs or out.transport_stderr),
            )
        else:
            warnings = run_warnings(
                before=before, after=after, cool=cool, max_rise_c=cfg.max_temp_rise_c, below_c=cfg.cooldown_temp_c
            )
            warnings += stats_warnings(
                stats,
                out=out,
                n=n,
                chosen=chosen,
                place=place,
                pte_mb=common["pte_mb"],
                peak_rss_mb=measured["peak_rss_mb"],
                max_new_tokens=cfg.max_new_tokens,
            )
            rec = device_record(**common, **measured, status=Status.OK.value, **stats_fields(stats), warnings=warnings)
        self.records.append(rec)
        return rec

    # -- one configuration -----------------------------------------------------------------
    def measure_prompts(
        self,
        *,
        target: AnyTarget,
        facts: DeviceFacts,
        model: ModelSpec,
        place: Placement,
        staged: StagedConfig,
        prompts: dict[int, Path],
        plan: RunPlan,
    ) -> None:
        """Every prompt length of one staged model: the warm-up runs, then the measured runs (a failed run is a
        fault and ends its prompt length). After the first warm-up, a prompt the runner counted differently is
        rebuilt once (`plan.rebuild`) and staged again."""
        cfg = self.config
        phases = ((Phase.WARMUP, cfg.warmup), (Phase.MEASURED, cfg.repetitions))
        for n in cfg.prompt_tokens:
            name = f"{target.id} · {model.label} · prompt {n}"
            chosen = plan.flags(n)
            for phase, i, count in [(phase, i, count) for phase, count in phases for i in range(1, count + 1)]:
                self._runs += 1
                script = run_script(
                    workdir=staged.workdir,
                    command=plan.command(staged, n, chosen),
                    interval_s=cfg.rss_interval_s,
                    run_id=f"{os.getpid()}-{self._runs}",
                )
                rec = self.run_once(
                    target=target,
                    facts=facts,
                    model=model,
                    n=n,
                    script=script,
                    phase=phase,
                    index=i,
                    place=place,
                    chosen=chosen,
                    runner_name=plan.runner_name,
                    runner_flags=plan.runner_flags,
                    parse=plan.parse,
                    runner_build=plan.build,
                )
                self.progress.info(f"{name} · {phase.value} {i}/{count} · " + brief(rec))
                if not rec.ok:
                    self.faults.append(f"{name}: {rec.error}")
                    break
                want = plan.rebuild(rec.prompt_tokens, n) if phase is Phase.WARMUP and i == 1 else None
                if want is not None:
                    prompts[n] = self._prompt_file(model, want, n)
                    staged = plan.restage(prompts)
                    self.progress.info(f"{name} · the runner counted {rec.prompt_tokens} prompt tokens; prompt rebuilt")

    def measure_model(self, *, target: AnyTarget, facts: DeviceFacts, model: ModelSpec) -> None:
        """Every prompt length of one model on one target (faults of the runner are recorded)."""
        if model.runtime is not Runtime.EXECUTORCH:
            return self.measure_runtime(target=target, facts=facts, model=model)
        cfg = self.config
        prompts = {n: self._prompt_file(model, n, n) for n in cfg.prompt_tokens}
        stage = partial(
            target.stage, label_dir=_label_dir(model), pte=model.pte, tokenizer=model.tokenizer, runner=cfg.runner
        )
        staged = stage(prompts=prompts)
        runner = target.runner_flags(staged)
        place = placement(facts=facts, threads=cfg.threads, taskset=cfg.taskset, pin_big_cores=cfg.pin_big_cores)
        if len({m.runtime for m in self.models}) > 1:  # beside other runtimes: the same thread count, passed explicitly
            place = _same_threads(place, facts)
        runner_name = cfg.runner.name if cfg.runner is not None else "android_bench.host_runner"
        if model is self.models[0]:
            self.progress.info(f"{target.id}: runner {runner_name}: {runner.describe()}")
        plan = RunPlan(
            runner_name=runner_name,
            runner_flags=runner.describe(),
            build=target.runner_build(Runtime.EXECUTORCH, staged),
            flags=lambda n: run_flags(
                runner=runner,
                length_flag=cfg.length_flag,
                prompt_tokens=n,
                max_new_tokens=cfg.max_new_tokens,
                threads=place.threads,
            ),
            command=partial(executorch_command, prefix=taskset_prefix(place)),
            parse=parse_observer,
            rebuild=partial(rebuilt_length, exact=self._builder(model.tokenizer).exact),
            restage=lambda prompts: stage(prompts=prompts),
        )
        self.measure_prompts(
            target=target, facts=facts, model=model, place=place, staged=staged, prompts=prompts, plan=plan
        )

    def measure_runtime(self, *, target: AnyTarget, facts: DeviceFacts, model: ModelSpec) -> None:
        """Every prompt length of an ONNX model (onnxruntime-genai) or a .gguf (llama.cpp) on one target:
        the same prompts, threads, cores, cool-down and sampling of /proc as for a .pte."""
        cfg = self.config
        place = _same_threads(
            placement(facts=facts, threads=cfg.threads, taskset=cfg.taskset, pin_big_cores=cfg.pin_big_cores), facts
        )
        prompts = {n: self._prompt_file(model, n, n) for n in cfg.prompt_tokens}
        files, model_rel = self._runtime_files(model, threads=place.threads)
        runner = cfg.onnx_runner if model.runtime is Runtime.ONNXRUNTIME else cfg.llamacpp_runner
        stage = partial(
            target.stage_runtime,
            label_dir=_label_dir(model),
            runtime=model.runtime,
            files=files,
            model_rel=model_rel,
            runner=runner,
        )
        try:
            staged = stage(prompts=prompts)
            build = target.runner_build(model.runtime, staged)
        except BenchError as e:  # no runner for this runtime: the other models go on
            self.faults.append(f"{target.id} · {model.label}: {e}")
            self.progress.info(f"error: {target.id} · {model.label}: {e}")
            return
        self.progress.info(f"{target.id}: {model.runtime.value} runner {staged.runner} ({build})")
        chosen = RunFlags(flags=(), prompt_as_file=True, ignore_eos=True, length_flag=cfg.length_flag)
        plan = RunPlan(
            runner_name=staged.runner,
            runner_flags=model.runtime.value,
            build=build,
            flags=lambda n: chosen,
            command=partial(
                runtime_command,
                runtime=model.runtime,
                new_tokens=cfg.max_new_tokens,
                threads=place.threads,
                prefix=taskset_prefix(place),
            ),
            parse=parse_model_benchmark if model.runtime is Runtime.ONNXRUNTIME else parse_llama_perf,
            rebuild=partial(rebuilt_length, exact=self._builder(model.tokenizer).exact),
            restage=lambda prompts: stage(prompts=prompts),
        )
        self.measure_prompts(
            target=target, facts=facts, model=model, place=place, staged=staged, prompts=prompts, plan=plan
        )

    def _runtime_files(self, model: ModelSpec, *, threads: int | None) -> tuple[dict[str, Path], str]:
        """-> (files to stage, by path relative to the model's folder; the model's path among them).

        An ONNX folder is staged with its genai_config.json rewritten to the run's thread count
        (model_benchmark has no thread flag); the other files are the export's own.
        """
        if model.runtime is Runtime.LLAMACPP:
            return {model.pte.name: model.pte}, model.pte.name
        local = self.tmp / _label_dir(model) / "onnx"
        local.mkdir(parents=True, exist_ok=True)
        files = {}
        for f in model_files(model.pte):
            if f.name == "genai_config.json":
                (local / f.name).write_text(genai_config_with_threads(f.read_text(), threads))
                f = local / f.name
            files[f"onnx/{f.name}"] = f
        return files, "onnx"

    def run(self, targets: list[AnyTarget]) -> None:
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
            records=self.records,
            baseline=baseline,
            faults=self.faults,
            started=self.started,
            config=self.config.to_dict(),
            devices={k: asdict(v) for k, v in self.devices.items()},
        )


def _same_threads(place: Placement, facts: DeviceFacts) -> Placement:
    """No --threads: ExecuTorch's own default, one thread per core that is not little, made explicit.

    onnxruntime-genai's default differs (on the 2-core host it ran one thread, at half the speed), so
    when runtimes are compared every runner is given this count.
    """
    if place.threads is not None:
        return place
    return dataclasses.replace(place, threads=len(big_cores(facts)[0]) or None)


def _label_dir(model: ModelSpec) -> str:
    """A model's label -> the name of its folder on the target (and in the session's temporary folder)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.label)
