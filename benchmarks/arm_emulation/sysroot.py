"""The emulated aarch64 runtime, built from packages alone into a cache folder kept across runs.

In:  a cache folder (default $EDGE_ARM_CACHE, else ~/.cache/edge-arm); host tools `mmdebstrap`, `readelf` and
     `aarch64-linux-gnu-gcc` (Debian: `apt-get install mmdebstrap binutils gcc-aarch64-linux-gnu`); Debian's
     mirror and PyPI.
Out: `ensure(cache) -> Emulator`, whose `command(cpu, argv)` runs an arm64 python3.11 under qemu-user with:
       qemu/        qemu-user 10 from Debian 13, unpacked (Debian 12's 7.2 fakes no Arm /proc/cpuinfo, so
                    `import torch` crashes, and it miscomputes SME code under -cpu max)
       root/        an arm64 Debian 12 root with python3.11, unpacked by `mmdebstrap --variant=extract` (no package
                    scripts run, so building it needs no emulation)
       root-site/   PyPI's aarch64 torch==2.13.0 and executorch==1.5.1 wheels and the pure-Python modules their
                    import needs, installed with `pip --target` (nothing goes into the user's environment)
       cuda-stubs/  `cuda_stubs.build`'s stand-ins for the CUDA libraries the aarch64 torch links against
Each step is skipped when its output is already in the cache; a step's output appears only when it completed.
A cold build downloads about 1 GB (qemu's root 450 MB, the wheels 450 MB) and takes 2-3 minutes here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from arm_emulation import cuda_stubs

TORCH, EXECUTORCH = "torch==2.13.0", "executorch==1.5.1"
# What `import torch, executorch` needs beyond the two wheels (ExecuTorch's exir: ruamel.yaml, tabulate, ...).
PURE_PYTHON = (
    "numpy",
    "filelock",
    "typing-extensions",
    "sympy",
    "networkx",
    "jinja2",
    "fsspec",
    "setuptools",
    "ruamel.yaml",
    "packaging",
    "tabulate",
    "flatbuffers",
    "pyyaml",
)
ROOT_PACKAGES = "python3.11-minimal,libpython3.11-stdlib,libstdc++6,libgomp1,libgcc-s1,libatomic1"
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "readelf": "binutils", "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu"}


class SetupError(Exception):
    """The emulated runtime cannot be built here: one line for the user."""


@dataclass(frozen=True)
class Emulator:
    qemu: Path
    root: Path
    site: Path
    stubs: Path

    def command(self, cpu: str, argv: list[str]) -> list[str]:
        """qemu CPU model (e.g. "max", "neoverse-n1") and python arguments -> the command line."""
        return [str(self.qemu), "-cpu", cpu, "-L", str(self.root), str(self.root / "usr/bin/python3.11"), *argv]

    def env(self, pythonpath: list[Path]) -> dict[str, str]:
        """-> the environment for `command`: the root's site-packages after `pythonpath`, the CUDA stubs."""
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(map(str, [*pythonpath, self.site])),
            "PYTHONNOUSERSITE": "1",
            "LD_LIBRARY_PATH": str(self.stubs),
        }


def default_cache() -> Path:
    return Path(os.environ.get("EDGE_ARM_CACHE") or Path.home() / ".cache" / "edge-arm")


def debian_mirror() -> str:
    """The Debian mirror apt already uses on this machine (deb822 sources, else sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        text = path.read_text(errors="replace") if path.is_file() else ""
        if m := re.search(r"^URIs:\s*(\S+)", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+://\S+)", text, re.M
        ):
            return m.group(1)
    return "http://deb.debian.org/debian"


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SetupError(f"{what} failed (exit {proc.returncode}): {tail[0]}")


def _step(done: Path, build, what: str) -> None:
    """Build into `done`'s sibling temp folder, then rename: an interrupted step leaves nothing that looks done."""
    if done.exists():
        return
    tmp = done.with_name(done.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"arm setup: {what}", file=sys.stderr, flush=True)
    build(tmp)
    tmp.rename(done)


def _pip_platform_args() -> list[str]:
    # pip does not widen --platform to older manylinux tags: list every one the wheels may carry.
    tags = ["manylinux2014_aarch64"] + [f"manylinux_2_{i}_aarch64" for i in range(17, 37)]
    return [
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        *[x for t in tags for x in ("--platform", t)],
    ]


def _wheels(site: Path, cache: Path) -> None:
    wheels = cache / "wheels"
    plat = _pip_platform_args()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    _run([*pip, "download", *plat, "--no-deps", "-d", str(wheels), TORCH, EXECUTORCH], "downloading aarch64 wheels")
    _run([*pip, "download", *plat, "-d", str(wheels), *PURE_PYTHON], "downloading pure-Python wheels")
    _run(
        [*pip, "install", "--no-deps", "--no-index", *plat, "--target", str(site), *map(str, wheels.glob("*.whl"))],
        "unpacking wheels into the arm64 root",
    )


def ensure(cache: Path) -> Emulator:
    """Cache folder -> Emulator, building what is missing (SetupError with one line when it cannot)."""
    missing = [f"{tool} ({package})" for tool, package in HOST_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise SetupError(
            f"the Arm check needs {', '.join(missing)}: "
            f"sudo apt-get install {' '.join(sorted(set(HOST_TOOLS.values())))}"
        )
    cache.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    _step(
        cache / "qemu",
        lambda tmp: _run(
            [
                "mmdebstrap",
                "-q",
                "--variant=extract",
                "--architectures=amd64",
                "--include=qemu-user",
                "trixie",
                str(tmp),
                mirror,
            ],
            "unpacking qemu-user",
        ),
        "qemu-user 10 (Debian 13, unpacked)",
    )
    _step(
        cache / "root",
        lambda tmp: _run(
            [
                "mmdebstrap",
                "-q",
                "--variant=extract",
                "--architectures=arm64",
                f"--include={ROOT_PACKAGES}",
                "bookworm",
                str(tmp),
                mirror,
            ],
            "unpacking the arm64 root",
        ),
        "arm64 Debian 12 root with python3.11",
    )
    _step(cache / "root-site", lambda tmp: _wheels(tmp, cache), f"aarch64 wheels: {TORCH}, {EXECUTORCH}")
    _step(
        cache / "cuda-stubs",
        lambda tmp: cuda_stubs.build(cache / "root-site", tmp, cache / "root"),
        "CUDA stand-ins for the aarch64 torch",
    )
    return Emulator(
        qemu=cache / "qemu" / "usr/bin/qemu-aarch64",
        root=cache / "root",
        site=cache / "root-site",
        stubs=cache / "cuda-stubs",
    )
