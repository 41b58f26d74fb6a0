"""Where runs happen: a phone over adb, or this machine. Both run the same shell script.

In:  `BenchConfig`, and for a phone an `Adb` and a serial.
Out: a target with `facts()`, `thermal()`, `stage(...)` (put the runner, .pte, tokenizer and
     prompt where the runner can read them) and `execute(script)`.

One run is one shell script (`run_script`): cd into the work folder, start the runner in the
background with its output in files, sample `/proc/<pid>/status` (VmHWM = peak RSS, VmRSS =
current RSS) until it exits, then print its exit status, stdout and the tail of its stderr
between markers. On a phone the script is the one quoted argument of `adb -s SERIAL shell`;
on the host it is `sh -c`. So the phone and the host measure the same way.

Phone work folder (`--device-dir`, default /data/local/tmp/edge_bench):
    llama_main                     the runner, pushed once
    <label>/model.pte, <label>/tokenizer.json, <label>/prompt_<N>.txt
    run.out, run.err               the last run's output
A file already there with the same sha256 is not pushed again; free space is checked first.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from android_bench.adb import Adb, PushFailed, ShellResult
from android_bench.config import BenchConfig, Target
from android_bench.device import (
    DeviceFacts,
    Thermal,
    facts_from_android,
    parse_cpu_max_freqs,
    parse_cpu_possible,
    parse_df_available_kb,
    parse_dumpsys_battery,
    parse_dumpsys_thermal,
    parse_getprop,
    parse_meminfo,
)
from edge.io import sha256_file
from edge.progress import cpu_name

PID, MEM, EXIT, STDOUT, STDERR = "@@EDGE_PID", "@@EDGE_MEM", "@@EDGE_EXIT", "@@EDGE_STDOUT", "@@EDGE_STDERR"
STDERR_TAIL_BYTES = 65536
FREE_SPACE_MARGIN = 16 * (1 << 20)


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


@dataclass(frozen=True)
class RunCommand:
    """A runner invocation, paths as the runner sees them from the work folder."""

    runner: str  # shell words for the runner (already quoted)
    model_path: str
    tokenizer_path: str
    prompt_file: str
    flags: tuple[tuple[str, str], ...]  # (--flag, value) after the prompt
    prefix: tuple[str, ...] = ()  # e.g. ("taskset", "f0")

    def shell(self) -> str:
        """-> `[taskset MASK] RUNNER --model_path M --tokenizer_path T --prompt "$(cat P)" --flag v ...`"""
        words = [*(shlex.quote(w) for w in self.prefix), self.runner]
        words += ["--model_path", shlex.quote(self.model_path), "--tokenizer_path", shlex.quote(self.tokenizer_path)]
        words += ["--prompt", f'"$(cat {shlex.quote(self.prompt_file)})"']
        for flag, value in self.flags:
            words += [flag, shlex.quote(value)]
        return " ".join(words)


def run_script(*, workdir: str, command: RunCommand, interval_s: float) -> str:
    """Runner command -> one POSIX sh line (Android's mksh and toybox, or the host's sh) that runs
    it, samples its memory and reports its exit status and output between markers."""
    status = "/proc/$pid/status"
    parts = [
        f"cd {shlex.quote(workdir)} || exit 97",
        f"{command.shell()} > run.out 2> run.err & pid=$!",
        f'echo "{PID} $pid"',
        f"while [ -e {status} ]; do"
        f" m=$(grep -E '^(State|VmHWM|VmRSS):' {status} 2>/dev/null | tr -s ' \\t\\n' ' ');"
        f' case "$m" in ""|*"State: Z"*) break;; esac;'
        f' echo "{MEM} $m"; sleep {interval_s:g};'
        " done",
        "wait $pid",
        f'echo "{EXIT} $?"',
        f'echo "{STDOUT}"',
        "cat run.out",
        "echo",
        f'echo "{STDERR}"',
        f"tail -c {STDERR_TAIL_BYTES} run.err",
    ]
    return "; ".join(parts)


_MEM = re.compile(r"(VmHWM|VmRSS):\s*(\d+)\s*kB")


def parse_run_output(text: str, *, transport_stderr: str = "", timed_out: bool = False) -> RunOutput:
    """The run script's output -> RunOutput (peak RSS = the largest VmHWM sampled)."""
    pid = exit_code = None
    hwm: list[int] = []
    rss: list[int] = []
    samples = 0
    head, _, rest = text.partition(f"\n{STDOUT}\n")
    for line in head.splitlines():
        if line.startswith(PID):
            pid = int(line.split()[1]) if line.split()[1:] and line.split()[1].isdigit() else None
        elif line.startswith(MEM):
            samples += 1
            for key, kb in _MEM.findall(line):
                (hwm if key == "VmHWM" else rss).append(int(kb))
        elif line.startswith(EXIT):
            value = line.split()[1] if len(line.split()) > 1 else ""
            exit_code = int(value) if value.lstrip("-").isdigit() else None
    stdout, _, stderr = rest.partition(f"\n{STDERR}\n")
    return RunOutput(
        completed=exit_code is not None,
        exit_code=exit_code,
        pid=pid,
        stdout=stdout,
        stderr=stderr,
        peak_rss_kb=max(hwm) if hwm else None,
        rss_kb=max(rss) if rss else None,
        rss_samples=samples,
        transport_stderr=transport_stderr,
        timed_out=timed_out,
    )


@dataclass
class StagedConfig:
    """Where one configuration's files are, as seen from the work folder."""

    workdir: str
    runner: str
    model_path: str
    tokenizer_path: str
    prompt_files: dict[int, str] = field(default_factory=dict)  # prompt token count -> path


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

    def facts(self) -> DeviceFacts:
        """getprop, CPU clusters and memory -> DeviceFacts (one adb shell call)."""
        out = self.adb.check_shell(
            self.serial,
            "getprop; echo @@EDGE_CPU; cat /sys/devices/system/cpu/possible; echo @@EDGE_FREQ;"
            " for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do echo \"$f $(cat $f 2>/dev/null)\"; done;"
            " echo @@EDGE_MEM; cat /proc/meminfo",
            what="reading device facts",
        )
        props, _, rest = out.partition("@@EDGE_CPU")
        possible, _, rest = rest.partition("@@EDGE_FREQ")
        freqs, _, meminfo = rest.partition("@@EDGE_MEM")
        return facts_from_android(serial=self.serial, props=parse_getprop(props), possible=possible, freqs=freqs, meminfo=meminfo)

    def thermal(self) -> Thermal:
        """dumpsys battery + thermalservice -> Thermal (fields None where the phone does not say)."""
        r = self.adb.shell(self.serial, "dumpsys battery; echo @@EDGE_SPLIT; dumpsys thermalservice", timeout=60.0)
        if r.returncode != 0 and "@@EDGE_SPLIT" not in r.stdout:
            self.adb.ensure_connected(self.serial)
        battery, _, thermal = r.stdout.partition("@@EDGE_SPLIT")
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
            " ".join(["mkdir", "-p", *sorted({shlex.quote(p.rsplit('/', 1)[0]) for p in remote})])
            + "; sha256sum " + " ".join(shlex.quote(p) for p in remote) + " 2>/dev/null; true",
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
                f"{self.serial}: not enough space in {self.dir}: {need / (1 << 20):.1f} MB to push, "
                f"{free_kb / 1024:.1f} MB free"
            )
        for r, p in todo.items():
            self.adb.push(self.serial, p, r)
            self.pushed.append(r)

    def stage(self, *, label_dir: str, pte: Path, tokenizer: Path, prompts: dict[int, Path], runner: Path) -> StagedConfig:
        """Push what this configuration needs; paths as the runner sees them from the work folder."""
        sub = f"{self.dir}/{label_dir}"
        files = {
            f"{self.dir}/llama_main": runner,
            f"{sub}/{pte.name}": pte,
            f"{sub}/{tokenizer.name}": tokenizer,
            **{f"{sub}/prompt_{n}.txt": p for n, p in prompts.items()},
        }
        self.push_files(files)
        self.adb.check_shell(self.serial, f"chmod 755 {shlex.quote(self.dir)}/llama_main", what="making llama_main executable")
        return StagedConfig(
            workdir=self.dir,
            runner="./llama_main",
            model_path=f"{label_dir}/{pte.name}",
            tokenizer_path=f"{label_dir}/{tokenizer.name}",
            prompt_files={n: f"{label_dir}/prompt_{n}.txt" for n in prompts},
        )

    def close(self) -> None:
        """Nothing to release: the work folder stays on the phone, so the next session skips the pushes."""

    def execute(self, script: str, *, timeout: float) -> RunOutput:
        """Run one run script; DeviceDisconnected if the phone went away during it."""
        r: ShellResult = self.adb.shell(self.serial, script, timeout=timeout)
        out = parse_run_output(r.stdout, transport_stderr=r.stderr, timed_out=r.timed_out)
        if r.timed_out and out.pid is not None:
            self.adb.shell(self.serial, f"kill -9 {out.pid}", timeout=30.0)
        if not out.completed and not r.timed_out:
            self.adb.ensure_connected(self.serial)
        return out


class HostTarget:
    """This machine: the runner is ExecuTorch's runtime through `android_bench.host_runner`
    (or a host-built llama_main given with --runner)."""

    kind = Target.HOST

    def __init__(self, *, config: BenchConfig) -> None:
        self.config = config
        self.id = "host"
        self.workdir = Path(tempfile.mkdtemp(prefix="android_bench_host_"))

    def facts(self) -> DeviceFacts:
        freqs = "\n".join(f"{f} {_read(f).strip()}" for f in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq")))
        total, avail = parse_meminfo(_read("/proc/meminfo"))
        return DeviceFacts(
            serial="host",
            model=cpu_name(),
            manufacturer=None,
            soc=None,
            hardware=platform.machine(),
            os_version=f"{platform.system()} {platform.release()}",
            sdk=None,
            abi=platform.machine(),
            n_cores=parse_cpu_possible(_read("/sys/devices/system/cpu/possible")) or os.cpu_count(),
            cpu_max_freq_mhz=parse_cpu_max_freqs(freqs),
            mem_total_gb=total,
            mem_avail_gb=avail,
        )

    def thermal(self) -> Thermal:
        """Hottest thermal zone and the battery (on a laptop); None where the machine has none."""
        temps = []
        for zone in glob.glob("/sys/class/thermal/thermal_zone*/temp"):
            text = _read(zone).strip()
            if text.lstrip("-").isdigit():
                temps.append(int(text) / 1000)
        status = [_read(p).strip() for p in glob.glob("/sys/class/power_supply/*/status")]
        return Thermal(
            thermal_status=None,
            battery_temp_c=None,
            cpu_temp_c=max(temps) if temps else None,
            charging=("Charging" in status) if status else None,
            plugged=None,
        )

    def stage(self, *, label_dir: str, pte: Path, tokenizer: Path, prompts: dict[int, Path], runner: Path | None) -> StagedConfig:
        if runner is None:
            runner_words = f"{shlex.quote(sys.executable)} -m android_bench.host_runner"
        else:
            runner_words = shlex.quote(str(Path(runner).resolve()))
        return StagedConfig(
            workdir=str(self.workdir),
            runner=runner_words,
            model_path=str(pte.resolve()),
            tokenizer_path=str(tokenizer.resolve()),
            prompt_files={n: str(p.resolve()) for n, p in prompts.items()},
        )

    def close(self) -> None:
        """Remove the host work folder (prompt copies, run.out, run.err)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def execute(self, script: str, *, timeout: float) -> RunOutput:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen(
            ["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", env=env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            return parse_run_output(out, transport_stderr=err)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            return parse_run_output(out, transport_stderr=err, timed_out=True)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_mask(cores: tuple[int, ...]) -> str:
    """Core indices -> taskset's hexadecimal mask ('f0' for cores 4-7)."""
    return format(sum(1 << c for c in cores), "x")


def make_targets(config: BenchConfig) -> list[AndroidTarget | HostTarget]:
    """BenchConfig -> the targets to measure, in order (BenchError for adb and device faults)."""
    if config.target is Target.HOST:
        return [HostTarget(config=config)]
    from android_bench.adb import pick_serials

    adb = Adb()
    return [AndroidTarget(adb=adb, serial=s, config=config) for s in pick_serials(adb=adb, requested=config.serial)]

