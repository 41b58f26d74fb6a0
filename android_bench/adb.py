"""The `adb` command line, called the way Android engineers call it.

In:  the `adb` on PATH (Android platform tools; Debian's package `adb` works the same).
Out: `Adb`: `devices()`, `state(serial)`, `shell(serial, command)`, `push(serial, local, remote)`.
     Every call is `adb -s SERIAL ...`; a shell command is one argument, so every runner flag
     travels inside the quoted `adb shell "cd DIR && ./llama_main --model_path ..."` string.
     stdin is /dev/null (adb shell would otherwise forward the user's keystrokes to the phone),
     and adb runs in its own session: Ctrl-C reaches the harness, which kills the runner on the
     phone first (adbd would only send SIGHUP to the shell; the runner would keep running).
     Faults become one-line `BenchError`s: no adb, no device, several devices and neither
     --serial nor $ANDROID_SERIAL, offline or unauthorized devices, failed pushes, a device gone
     mid-run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from android_bench.config import BenchError
from android_bench.device import DeviceEntry, parse_adb_devices


class DeviceDisconnected(BenchError):
    """The device went away (unplugged, rebooted) while the harness was using it."""


class PushFailed(BenchError):
    """`adb push` failed, or the device has too little free space."""


@dataclass(frozen=True)
class ShellResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("* daemon")]
    return lines[-1] if lines else ""


class Adb:
    """One adb executable; every method names its device with `-s`."""

    def __init__(self, executable: str | None = None) -> None:
        found = executable or shutil.which("adb")
        if found is None:
            raise BenchError("adb not found on PATH (install Android platform-tools, or Debian's package adb)")
        self.executable = found

    def _run(self, args: list[str], *, timeout: float | None = 60.0) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.executable, *args],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise BenchError(f"adb {' '.join(args[:3])} did not answer within {timeout:.0f} s") from None
        except OSError as e:
            raise BenchError(f"adb could not be run ({e.strerror})") from None

    def devices(self) -> list[DeviceEntry]:
        """Every device adb knows, with its state (`adb devices -l`)."""
        r = self._run(["devices", "-l"])
        if r.returncode != 0:
            raise BenchError(f"adb devices failed: {_last_line(r.stderr) or r.returncode}")
        return parse_adb_devices(r.stdout)

    def state(self, serial: str) -> str | None:
        """`adb -s SERIAL get-state` -> 'device', 'offline', ... or None when adb does not see it.

        adb exits 1 with "error: device offline" (or "unauthorized") for a device it still lists."""
        r = self._run(["-s", serial, "get-state"], timeout=30.0)
        if r.returncode == 0:
            return r.stdout.strip() or None
        for state in ("offline", "unauthorized"):
            if f"device {state}" in r.stderr or f"device '{serial}' {state}" in r.stderr:
                return state
        return None

    def wait_online(self, serial: str, *, timeout: float, poll: float = 1.0) -> bool:
        """Poll `get-state` until SERIAL is online again -> whether it came back within `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            if self.state(serial) == "device":
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)

    def shell(self, serial: str, command: str, *, timeout: float = 120.0) -> ShellResult:
        """`adb -s SERIAL shell "COMMAND"` -> its exit status and output (never raises on status)."""
        proc = subprocess.Popen(
            [self.executable, "-s", serial, "shell", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            return ShellResult(returncode=proc.returncode, stdout=out, stderr=err)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return ShellResult(returncode=-9, stdout=out, stderr=err, timed_out=True)
        except KeyboardInterrupt:
            proc.terminate()  # adb closes the stream; adbd hangs up the shell
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise

    def check_shell(self, serial: str, command: str, *, what: str, timeout: float = 120.0) -> str:
        """Run a short command; its stdout, or DeviceDisconnected / BenchError naming `what`."""
        r = self.shell(serial, command, timeout=timeout)
        if r.returncode != 0:
            self.ensure_connected(serial)
            why = _last_line(r.stderr) or _last_line(r.stdout) or f"exit {r.returncode}"
            raise BenchError(f"{serial}: {what} failed: {why}")
        return r.stdout

    def ensure_connected(self, serial: str) -> None:
        """DeviceDisconnected unless adb still sees SERIAL online."""
        state = self.state(serial)
        if state != "device":
            raise DeviceDisconnected(f"device {serial} disconnected ({'gone' if state is None else state})")

    def push(self, serial: str, local: Path, remote: str, *, timeout: float = 1800.0) -> None:
        """`adb -s SERIAL push LOCAL REMOTE` (PushFailed with adb's own message)."""
        r = self._run(["-s", serial, "push", str(local), remote], timeout=timeout)
        if r.returncode != 0:
            self.ensure_connected(serial)
            why = _last_line(r.stderr) or _last_line(r.stdout)
            raise PushFailed(f"{serial}: adb push {local.name} to {remote} failed: {why}")


def pick_serials(*, adb: Adb, requested: tuple[str, ...]) -> list[str]:
    """--serial values (else $ANDROID_SERIAL, else the only device) -> serials that are online,
    or BenchError naming the problem."""
    entries = adb.devices()
    by_serial = {e.serial: e for e in entries}
    if not requested and os.environ.get("ANDROID_SERIAL"):
        requested = (os.environ["ANDROID_SERIAL"],)
    if not requested:
        if not entries:
            raise BenchError("no Android device attached (adb devices lists none); plug one in and allow USB debugging")
        if len(entries) > 1:
            listed = ", ".join(f"{e.serial} ({e.state})" for e in entries)
            raise BenchError(f"several devices attached ({listed}); choose with --serial (or $ANDROID_SERIAL)")
        requested = (entries[0].serial,)
    for serial in requested:
        entry = by_serial.get(serial)
        if entry is None:
            raise BenchError(f"device {serial} not found (adb devices lists {', '.join(by_serial) or 'none'})")
        if entry.state == "unauthorized":
            raise BenchError(f"device {serial} is unauthorized: accept the USB debugging prompt on the phone")
        if entry.state == "offline":
            raise BenchError(f"device {serial} is offline: reconnect it (or run adb kill-server)")
        if entry.state != "device":
            raise BenchError(f"device {serial} is in state '{entry.state}', not ready for shell commands")
    return list(requested)
