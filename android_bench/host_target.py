"""This machine as a bench target: the same shell scripts as on a phone, run with `sh -c`.

In:  `BenchConfig`. Out: `HostTarget` with the interface of `android_bench.targets.AndroidTarget`: `facts()`,
     `thermal()`, `stage(...)` and `execute(script)`; the runner is ExecuTorch's runtime through
     `android_bench.host_runner` unless --runner names a host-built llama_main.
"""

from __future__ import annotations

import glob
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from android_bench.adb import ShellResult
from android_bench.config import BenchConfig, BenchError, Target
from android_bench.device import (
    DeviceFacts,
    Thermal,
    parse_cpu_list,
    parse_cpu_max_freqs,
    parse_cpu_possible,
    parse_cpuinfo_parts,
    parse_meminfo,
)
from android_bench.device_script import RunOutput, StagedConfig, parse_run_output
from android_bench.runner_flags import RunnerFlags, flags_from_probe_output, probe_script
from android_bench.runners import Runtime, llama_build
from edge.core.io import sha256_file
from edge.core.machine import cpu_name


class HostTarget:
    """This machine: the runner is ExecuTorch's runtime through `android_bench.host_runner`
    (or a host-built llama_main given with --runner)."""

    kind = Target.HOST

    def __init__(self, *, config: BenchConfig) -> None:
        self.config = config
        self.id = "host"
        self.workdir = Path(tempfile.mkdtemp(prefix="android_bench_host_"))
        self._flags: RunnerFlags | None = None

    def facts(self) -> DeviceFacts:
        found = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq"))
        freqs = "\n".join(f"{f} {_read(f).strip()}" for f in found)
        total, avail = parse_meminfo(_read("/proc/meminfo"))
        n_cores = parse_cpu_possible(_read("/sys/devices/system/cpu/possible")) or os.cpu_count()
        return DeviceFacts(
            serial="host",
            model=cpu_name(),
            manufacturer=None,
            soc=None,
            hardware=platform.machine(),
            os_version=f"{platform.system()} {platform.release()}",
            sdk=None,
            abi=platform.machine(),
            n_cores=n_cores,
            cpu_max_freq_mhz=parse_cpu_max_freqs(freqs, n_cores=n_cores),
            mem_total_gb=total,
            mem_avail_gb=avail,
            cpu_online=parse_cpu_list(_read("/sys/devices/system/cpu/online")),
            cpu_parts=parse_cpuinfo_parts(_read("/proc/cpuinfo")),
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

    def stage(
        self, *, label_dir: str, pte: Path, tokenizer: Path, prompts: dict[int, Path], runner: Path | None
    ) -> StagedConfig:
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
        """The model's files linked into the work folder (an ONNX folder's genai_config.json is the staged copy)."""
        if runner is not None:
            words = shlex.quote(str(Path(runner).resolve()))
        elif runtime is Runtime.ONNXRUNTIME:
            words = f"{shlex.quote(sys.executable)} -m android_bench.ort_host_runner"
        else:
            found = shutil.which("llama-completion")
            if found is None:
                raise BenchError(
                    "llama.cpp's llama-completion is not on PATH (build llama.cpp, or pass --llamacpp-runner FILE)"
                )
            words = shlex.quote(found)
        folder = self.workdir / label_dir
        for rel, src in files.items():
            link = folder / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(Path(src).resolve())
        return StagedConfig(
            workdir=str(self.workdir),
            runner=words,
            model_path=str(folder / model_rel),
            tokenizer_path="",
            prompt_files={n: str(p.resolve()) for n, p in prompts.items()},
        )

    def runner_build(self, runtime: Runtime, staged: StagedConfig) -> str:
        """Package versions for the Python runner; llama.cpp's --version line or the binary's sha256 otherwise."""
        from importlib import metadata

        if "android_bench.host_runner" in staged.runner:
            return f"executorch {metadata.version('executorch')} (Python package)"
        if "android_bench.ort_host_runner" in staged.runner:
            v = {p: metadata.version(p) for p in ("onnxruntime-genai", "onnxruntime")}
            return f"onnxruntime-genai {v['onnxruntime-genai']}, onnxruntime {v['onnxruntime']} (Python package)"
        binary = Path(shlex.split(staged.runner)[0])
        if runtime is Runtime.LLAMACPP:
            r = self._sh(f"{staged.runner} --version", timeout=30.0)
            found = llama_build(r.stdout + r.stderr)
            if found:
                return found
        return f"{binary.name} sha256:{sha256_file(binary)[:16]}" if binary.is_file() else binary.name

    def close(self) -> None:
        """Remove the host work folder (prompt copies, run.out, run.err)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def runner_flags(self, staged: StagedConfig) -> RunnerFlags:
        """Ask the runner once for its flags, as on a phone."""
        if self._flags is None:
            r = self._sh(probe_script(workdir=staged.workdir, runner=staged.runner), timeout=120.0)
            self._flags = flags_from_probe_output(r.stdout, where="this machine")
        return self._flags

    def _sh(self, script: str, *, timeout: float) -> ShellResult:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen(
            ["sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            env=env,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            return ShellResult(returncode=proc.returncode, stdout=out, stderr=err)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            return ShellResult(returncode=-9, stdout=out, stderr=err, timed_out=True)
        except KeyboardInterrupt:
            os.killpg(proc.pid, 9)  # the script and its runner share one new session
            proc.communicate()
            raise

    def execute(self, script: str, *, timeout: float) -> RunOutput:
        r = self._sh(script, timeout=timeout)
        return parse_run_output(r.stdout, transport_stderr=r.stderr, timed_out=r.timed_out)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
