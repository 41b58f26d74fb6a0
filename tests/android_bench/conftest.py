"""Fixtures for the android_bench tests: one tiny export per session, and fake phones.

`exported`   a tiny Llama exported with the fixture_8da4w scheme (max context 128), once.
`phones`     a fresh $FAKE_ADB_HOME with tests/android_bench/fake_adb first on PATH as `adb`;
             `phones.add(serial, ...)` attaches a fake device (see fake_adb for its settings).
             The fake adb runs device commands with mksh (Android's shell): without it these tests are
             skipped, or fail where EDGE_REQUIRE_MKSH=1 (CI, so they cannot pass by being skipped).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FAKE_ADB = HERE / "fake_adb"
FAKE_LLAMA_MAIN = HERE / "fake_llama_main"
NO_MKSH = "mksh (Android's shell) is not installed: sudo apt-get install mksh"

# A Pixel 8 (Tensor G3): 4 Cortex-A510 (little) at 1704 MHz, 4 A715 at 2367 MHz, 1 X3 at 2910 MHz.
PIXEL_8 = {
    "model": "Pixel 8",
    "product": "shiba",
    "device": "shiba",
    "props": {
        "ro.product.model": "Pixel 8",
        "ro.product.manufacturer": "Google",
        "ro.soc.manufacturer": "Google",
        "ro.soc.model": "Tensor G3",
        "ro.board.platform": "zuma",
        "ro.hardware": "shiba",
        "ro.build.version.release": "14",
        "ro.build.version.sdk": "34",
        "ro.product.cpu.abi": "arm64-v8a",
    },
    "cpu_max_khz": [1704000] * 4 + [2367000] * 4 + [2910000],
    "cpu_parts": [0xD46] * 4 + [0xD4D] * 4 + [0xD4E],
}


def cpu_ranges(cores: list[int]) -> str:
    """[0, 1, 2, 3, 5] -> '0-3,5', as sysfs writes cpu lists."""
    runs: list[list[int]] = []
    for c in cores:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def cpuinfo(parts: list[int]) -> str:
    """/proc/cpuinfo as an arm64 kernel writes it (one block per online processor)."""
    blocks = []
    for i, part in enumerate(parts):
        if part is None:
            continue  # offline: not listed
        blocks.append(
            f"processor\t: {i}\nBogoMIPS\t: 49.15\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"
            "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n"
            f"CPU part\t: 0x{part:03x}\nCPU revision\t: 0\n"
        )
    return "\n".join(blocks) + "\n"


class Phones:
    """The fake adb's world: devices, their file trees, and the log of adb calls."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.db = home / "devices.json"
        self.db.write_text("{}")

    def add(self, serial: str, *, state: str = "device", like: dict = PIXEL_8, **settings) -> Path:
        """Attach a device; returns its file tree's root."""
        db = json.loads(self.db.read_text())
        dev = {**json.loads(json.dumps(like)), "state": state, "transport_id": len(db) + 1, **settings}
        db[serial] = dev
        self.db.write_text(json.dumps(db, indent=1))
        root = self.home / serial / "fs"
        (root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
        cpu = root / "sys/devices/system/cpu"
        freqs = dev.get("cpu_max_khz", [])
        cpu.mkdir(parents=True, exist_ok=True)
        (cpu / "possible").write_text(f"0-{len(freqs) - 1}\n" if freqs else "0\n")
        online = [i for i, khz in enumerate(freqs) if khz is not None]  # None: offline, no cpufreq folder
        (cpu / "online").write_text(cpu_ranges(online) + "\n")
        for i, khz in enumerate(freqs):
            (cpu / f"cpu{i}").mkdir(parents=True, exist_ok=True)
            if khz is not None:
                (cpu / f"cpu{i}/cpufreq").mkdir(parents=True, exist_ok=True)
                (cpu / f"cpu{i}/cpufreq/cpuinfo_max_freq").write_text(f"{khz}\n")
        (root / "proc").mkdir(exist_ok=True)
        parts = dev.get("cpu_parts")
        (root / "proc/cpuinfo").write_text(cpuinfo(parts) if parts else "processor\t: 0\nBogoMIPS\t: 38.40\n")
        return root

    def fs(self, serial: str) -> Path:
        return self.home / serial / "fs"

    def calls(self) -> list[dict]:
        log = self.home / "log.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def device(self, serial: str) -> dict | None:
        return json.loads(self.db.read_text()).get(serial)

    def tasksets(self, serial: str) -> list[str]:
        """The masks the device's taskset was given, in order."""
        path = self.home / serial / "taskset.log"
        return path.read_text().split() if path.exists() else []

    def logcat(self, serial: str) -> str:
        path = self.home / serial / "logcat.txt"
        return path.read_text() if path.exists() else ""


def require_mksh() -> None:
    """Nothing when mksh is on PATH; else skip the test, or fail it when $EDGE_REQUIRE_MKSH is 1."""
    if shutil.which("mksh") is not None:
        return
    if os.environ.get("EDGE_REQUIRE_MKSH") == "1":
        pytest.fail(NO_MKSH)
    pytest.skip(NO_MKSH)


@pytest.fixture
def phones(tmp_path, monkeypatch) -> Phones:
    """Fake phones behind tests/android_bench/fake_adb (which runs their shell commands with mksh)."""
    require_mksh()
    home = tmp_path / "fake_adb_home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "adb").symlink_to(FAKE_ADB)
    # The fake adb and the fake runner are Python scripts (`#!/usr/bin/env python3`): this
    # interpreter's folder goes right after the fake adb, before anything else on PATH.
    monkeypatch.setenv(
        "PATH", os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    monkeypatch.setenv("FAKE_ADB_HOME", str(home))
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    return Phones(home)


@pytest.fixture(scope="session")
def exported(tiny_hf, tmp_path_factory) -> Path:
    """Folder with model.pte, onnx/ and model.gguf (tiny Llama, 8da4w, max context 128), tokenizer.json,
    manifest.json."""
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.export.pipeline import run_export

    out = tmp_path_factory.mktemp("bench_export") / "tiny_8da4w"
    config = load_config(
        config="fixture_8da4w",
        overrides={
            "checkpoint": str(tiny_hf),
            "output": str(out),
            "max_context": 128,
            "formats": ["pte", "onnx", "gguf"],
        },
    )
    run_export(config, progress=Progress(quiet=True))
    return out
