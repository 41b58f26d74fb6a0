"""Where runs happen: a phone over adb, or this machine. Both run the same shell script.

In:  `BenchConfig`, and for a phone an `Adb` and a serial.
Out: a target with `facts()`, `thermal()`, `stage(...)` (put the runner, .pte, tokenizer and
     prompt where the runner can read them) and `execute(script)`.

One run is one shell script (`android_bench.device_script.run_script`). On a phone it is the one
quoted argument of `adb -s SERIAL shell` (Android's mksh runs it); on the host it is `sh -c`.
So the phone and the host measure the same way. Each runner is asked once for its flags
(`--helpshort`, see `android_bench.runner_flags`).

Phone work folder (`--device-dir`, default /data/local/tmp/edge_bench):
    llama_main                     the runner, pushed once
    <label>/model.pte, <label>/tokenizer.json, <label>/prompt_<N>.txt
    run-<id>.out, run-<id>.err     the last run's output (each run its own names)
    runner.pid                     the running runner's pid (killed before the next run, on
                                   Ctrl-C, and after a disconnect once the phone is back)
A file already there with the same sha256 is not pushed again; free space is checked first.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from android_bench.adb import Adb, DeviceDisconnected, PushFailed, ShellResult, pick_serials
from android_bench.config import BenchConfig, BenchError, Target
from android_bench.device import (
    DeviceFacts,
    Thermal,
    facts_from_android,
    parse_df_available_kb,
    parse_dumpsys_battery,
    parse_dumpsys_thermal,
    parse_getprop,
)
from android_bench.device_script import LEFTOVER, RunOutput, StagedConfig, kill_leftover_command, parse_run_output
from android_bench.host_target import HostTarget
from android_bench.runner_flags import SPLIT, RunnerFlags, flags_from_probe_output, probe_script
from android_bench.runners import Runtime
from edge.core.io import sha256_file

FREE_SPACE_MARGIN = 16 * (1 << 20)


class AndroidTarget:
    """A phone reached with `adb -s SERIAL`."""

    kind = Target.ANDROID

    def __init__(self, *, adb: Adb, serial: str, config: BenchConfig) -> None:
        self.adb = adb
        self.serial = serial
        self.config = config
        self.id = serial
        self.dir = config.device_dir
        self._sha_cache: dict[Path, str] = {}
        self.pushed: list[str] = []  # remote paths pushed in this session (for the summary)
        self.skipped: list[str] = []  # remote paths already there with the same sha256
        self._flags: RunnerFlags | None = None

    def facts(self) -> DeviceFacts:
        """getprop, CPU clusters and memory -> DeviceFacts (one adb shell call)."""
        out = self.adb.check_shell(
            self.serial,
            "getprop; echo @@EDGE_CPU; cat /sys/devices/system/cpu/possible; echo @@EDGE_FREQ;"
            " for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq;"
            ' do echo "$f $(cat $f 2>/dev/null)"; done;'
            " echo @@EDGE_MEM; cat /proc/meminfo; echo @@EDGE_ONLINE; cat /sys/devices/system/cpu/online;"
            " echo @@EDGE_CPUINFO; cat /proc/cpuinfo",
            what="reading device facts",
        )
        props, _, rest = out.partition("@@EDGE_CPU\n")
        possible, _, rest = rest.partition("@@EDGE_FREQ")
        freqs, _, rest = rest.partition("@@EDGE_MEM")
        meminfo, _, rest = rest.partition("@@EDGE_ONLINE")
        online, _, cpuinfo = rest.partition("@@EDGE_CPUINFO")
        return facts_from_android(
            serial=self.serial,
            props=parse_getprop(props),
            possible=possible,
            freqs=freqs,
            meminfo=meminfo,
            online=online,
            cpuinfo=cpuinfo,
        )

    def thermal(self) -> Thermal:
        """dumpsys battery + thermalservice -> Thermal (fields None where the phone does not say)."""
        r = self.adb.shell(self.serial, f"dumpsys battery; echo {SPLIT}; dumpsys thermalservice", timeout=60.0)
        if r.returncode != 0 and SPLIT not in r.stdout:
            self.adb.ensure_connected(self.serial)
        battery, _, thermal = r.stdout.partition(SPLIT)
        temp, charging, plugged = parse_dumpsys_battery(battery)
        status, cpu = parse_dumpsys_thermal(thermal)
        return Thermal(thermal_status=status, battery_temp_c=temp, cpu_temp_c=cpu, charging=charging, plugged=plugged)

    def _local_sha(self, path: Path) -> str:
        if path not in self._sha_cache:
            self._sha_cache[path] = sha256_file(path)
        return self._sha_cache[path]

    def push_files(self, files: dict[str, Path]) -> None:
        """remote path -> local file: push those whose sha256 differs; check free space first."""
        remote = list(files)
        out = self.adb.check_shell(
            self.serial,
            " ".join(["mkdir", "-p", *sorted({shlex.quote(p.rsplit("/", 1)[0]) for p in remote})])
            + "; sha256sum "
            + " ".join(shlex.quote(p) for p in remote)
            + " 2>/dev/null; true",
            what="checking files on the device",
        )
        there = {}
        for line in out.splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                there[parts[1].strip()] = parts[0]
        todo = {r: p for r, p in files.items() if there.get(r) != self._local_sha(p)}
        self.skipped += [r for r in files if r not in todo]
        if not todo:
            return
        need = sum(p.stat().st_size for p in todo.values())
        df = self.adb.check_shell(self.serial, f"df -k {shlex.quote(self.dir)}", what="checking free space")
        free_kb = parse_df_available_kb(df)
        if free_kb is not None and free_kb * 1024 < need + FREE_SPACE_MARGIN:
            raise PushFailed(
                f"{self.serial}: not enough space in {self.dir}: {need / (1 << 20):.1f} MiB to push, "
                f"{free_kb / 1024:.1f} MiB free"
            )
        for r, p in todo.items():
            self.adb.push(self.serial, p, r)
            self.pushed.append(r)

    def stage(
        self, *, label_dir: str, pte: Path, tokenizer: Path, prompts: dict[int, Path], runner: Path
    ) -> StagedConfig:
        """Push what this configuration needs; paths as the runner sees them from the work folder."""
        sub = f"{self.dir}/{label_dir}"
        files = {
            f"{self.dir}/llama_main": runner,
            f"{sub}/{pte.name}": pte,
            f"{sub}/{tokenizer.name}": tokenizer,
            **{f"{sub}/prompt_{n}.txt": p for n, p in prompts.items()},
        }
        self.push_files(files)
        self.adb.check_shell(
            self.serial, f"chmod 755 {shlex.quote(self.dir)}/llama_main", what="making llama_main executable"
        )
        self._runtime_runner = Path(runner)
        return StagedConfig(
            workdir=self.dir,
            runner="./llama_main",
            model_path=f"{label_dir}/{pte.name}",
            tokenizer_path=f"{label_dir}/{tokenizer.name}",
            prompt_files={n: f"{label_dir}/prompt_{n}.txt" for n in prompts},
        )

    def stage_runtime(
        self,
        *,
        label_dir: str,
        runtime: Runtime,
        files: dict[str, Path],
        model_rel: str,
        prompts: dict[int, Path],
        runner: Path | None,
    ) -> StagedConfig:
        """Push an ONNX Runtime or llama.cpp runner (with the lib*.so beside it) and the model's files."""
        if runner is None:
            what, flag = (
                ("onnxruntime-genai's model_benchmark", "--onnx-runner")
                if runtime is Runtime.ONNXRUNTIME
                else ("llama.cpp's llama-completion", "--llamacpp-runner")
            )
            raise BenchError(f"a phone needs {what} built for arm64-v8a (pass {flag} FILE)")
        sub = f"{self.dir}/{label_dir}"
        libs = {f"{self.dir}/{lib.name}": lib for lib in sorted(Path(runner).parent.glob("lib*.so"))}
        self.push_files(
            {
                f"{self.dir}/{runner.name}": runner,
                **libs,
                **{f"{sub}/{rel}": p for rel, p in files.items()},
                **{f"{sub}/prompt_{n}.txt": p for n, p in prompts.items()},
            }
        )
        self.adb.check_shell(
            self.serial,
            f"chmod 755 {shlex.quote(self.dir)}/{shlex.quote(runner.name)}",
            what=f"making {runner.name} executable",
        )
        self._runtime_runner = Path(runner)
        return StagedConfig(
            workdir=self.dir,
            runner=f"env LD_LIBRARY_PATH=. ./{shlex.quote(runner.name)}",  # its shared libraries were pushed beside it
            model_path=f"{label_dir}/{model_rel}",
            tokenizer_path="",
            prompt_files={n: f"{label_dir}/prompt_{n}.txt" for n in prompts},
        )

    def runner_build(self, runtime: Runtime, staged: StagedConfig) -> str:
        """The pushed runner's identity: its file name and sha256."""
        return f"{self._runtime_runner.name} sha256:{self._local_sha(self._runtime_runner)[:16]}"

    def close(self) -> None:
        """Nothing to release: the work folder stays on the phone, so the next session skips the pushes."""

    def runner_flags(self, staged: StagedConfig) -> RunnerFlags:
        """Ask the pushed runner once for its flags (`--helpshort`, then `--help`)."""
        if self._flags is None:
            r = self.adb.shell(self.serial, probe_script(workdir=staged.workdir, runner=staged.runner), timeout=60.0)
            if SPLIT not in r.stdout:
                self.adb.ensure_connected(self.serial)
            self._flags = flags_from_probe_output(r.stdout, where=self.serial)
        return self._flags

    def kill_runner(self) -> int | None:
        """Kill the runner named in the work folder's runner.pid -> its pid, or None if none ran."""
        r = self.adb.shell(self.serial, f"cd {shlex.quote(self.dir)} && {kill_leftover_command()}", timeout=30.0)
        found = re.search(rf"^{LEFTOVER} (\d+)", r.stdout, re.M)
        return int(found.group(1)) if found else None

    def execute(self, script: str, *, timeout: float) -> RunOutput:
        """Run one run script; DeviceDisconnected if the phone went away during it. On Ctrl-C,
        and after a disconnect once the phone is back, the runner is killed on the phone."""
        try:
            r: ShellResult = self.adb.shell(self.serial, script, timeout=timeout)
        except KeyboardInterrupt:
            try:
                self.kill_runner()
            except (BenchError, KeyboardInterrupt):
                pass  # the next run kills it
            raise
        out = parse_run_output(r.stdout, transport_stderr=r.stderr, timed_out=r.timed_out)
        if r.timed_out:
            self.kill_runner()
        if not out.completed and not r.timed_out:
            state = self.adb.state(self.serial)
            if state != "device":
                wait = self.config.reconnect_wait_s
                back = self.adb.wait_online(self.serial, timeout=wait)
                killed = self.kill_runner() if back else None
                after = (
                    f"; it came back and the runner it left running (pid {killed}) was killed"
                    if killed is not None
                    else "; it came back"
                    if back
                    else f"; not back within {wait:g} s (a runner left there is killed before the next run)"
                )
                raise DeviceDisconnected(f"device {self.serial} disconnected ({state or 'gone'}){after}")
        return out


def make_targets(config: BenchConfig) -> list[AndroidTarget | HostTarget]:
    """BenchConfig -> the targets to measure, in order (BenchError for adb and device faults)."""
    if config.target is Target.HOST:
        return [HostTarget(config=config)]
    adb = Adb()
    return [AndroidTarget(adb=adb, serial=s, config=config) for s in pick_serials(adb=adb, requested=config.serial)]
