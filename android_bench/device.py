"""Device facts and thermal state, parsed from what Android's own tools print.

In:  the text of `adb devices -l`, `getprop`, `/sys/devices/system/cpu/...`, `/proc/meminfo`,
     `dumpsys battery`, `dumpsys thermalservice` and toybox `df -k` (or the host's equivalents).
Out: `DeviceFacts` (recorded with every result) and `Thermal` (read before and after every run).
     Every parser is a pure function of text, so the tests feed them real output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DeviceEntry:
    """One line of `adb devices -l`."""

    serial: str
    state: str  # device | offline | unauthorized | recovery | ...
    model: str | None = None
    product: str | None = None


@dataclass(frozen=True)
class DeviceFacts:
    serial: str
    model: str
    manufacturer: str | None
    soc: str | None
    hardware: str | None
    os_version: str  # "Android 14" or "Linux 6.8.0"
    sdk: str | None
    abi: str | None
    n_cores: int | None
    cpu_max_freq_mhz: tuple[int | None, ...]  # indexed by core number; None for a core without cpufreq (offline)
    mem_total_gb: float | None
    mem_avail_gb: float | None
    cpu_online: tuple[int, ...] = ()  # /sys/devices/system/cpu/online; empty if unknown
    cpu_parts: dict[int, int] = field(default_factory=dict)  # core -> /proc/cpuinfo "CPU part" id

    def online_cores(self) -> tuple[int, ...]:
        """The online cores (all `n_cores` when the kernel does not say)."""
        return self.cpu_online or tuple(range(self.n_cores or len(self.cpu_max_freq_mhz)))


@dataclass(frozen=True)
class Thermal:
    thermal_status: int | None  # Android PowerManager THERMAL_STATUS_*: 0 none, 1 light, 2 moderate, 3 severe...
    battery_temp_c: float | None
    cpu_temp_c: float | None  # hottest CPU sensor the HAL reports
    charging: bool | None  # battery status CHARGING
    plugged: bool | None  # AC, USB or wireless power present

    @property
    def temp_c(self) -> float | None:
        """The temperature cool-down waits on: the battery's, else the hottest CPU sensor."""
        return self.battery_temp_c if self.battery_temp_c is not None else self.cpu_temp_c


def parse_adb_devices(text: str) -> list[DeviceEntry]:
    """`adb devices -l` output -> its entries (the header and daemon notices are skipped)."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*") or line.startswith("adb "):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        serial, state = parts[0], parts[1]
        if state == "no" and len(parts) > 2 and parts[2].startswith("permissions"):
            state = "no permissions"
        info = dict(p.split(":", 1) for p in parts[2:] if ":" in p)
        entries.append(DeviceEntry(serial=serial, state=state, model=info.get("model"), product=info.get("product")))
    return entries


_PROP = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output (`[key]: [value]` lines) -> mapping."""
    props = {}
    for line in text.splitlines():
        m = _PROP.match(line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


_FREQ = re.compile(r"cpu(\d+)/cpufreq/cpuinfo_max_freq[:\s]+(\d+)")


def parse_cpu_max_freqs(text: str, *, n_cores: int | None = None) -> tuple[int | None, ...]:
    """Lines 'PATH/cpuN/cpufreq/cpuinfo_max_freq KHZ' -> maximum MHz indexed by core number.

    An offline core has no cpufreq folder: its entry is None, so later cores keep their numbers."""
    found = {int(m.group(1)): int(m.group(2)) // 1000 for m in _FREQ.finditer(text)}
    size = max([n_cores or 0, *(c + 1 for c in found)])
    return tuple(found.get(i) for i in range(size))


def parse_cpu_possible(text: str) -> int | None:
    """`/sys/devices/system/cpu/possible` ('0-7' or '0-3,6') -> core count."""
    text = text.strip()
    if not re.fullmatch(r"[0-9,\-]+", text or "x"):
        return None
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += (int(hi) - int(lo) + 1) if hi else 1
    return count


def parse_cpuinfo_parts(text: str) -> dict[int, int]:
    """/proc/cpuinfo -> core index -> "CPU part" id (arm64 kernels list it per processor)."""
    parts: dict[int, int] = {}
    core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor" and value.isdigit():
            core = int(value)
        elif key == "CPU part" and core is not None and re.fullmatch(r"0x[0-9a-fA-F]+", value):
            parts[core] = int(value, 16)
    return parts


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """'0-3,6' (sysfs online, Cpus_allowed_list) -> (0, 1, 2, 3, 6); () when unreadable."""
    text = text.strip()
    if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text):
        return ()
    cores: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cores += range(int(lo), int(hi or lo) + 1)
    return tuple(cores)


def parse_meminfo(text: str) -> tuple[float | None, float | None]:
    """`/proc/meminfo` -> (MemTotal GB, MemAvailable GB)."""
    values = {}
    for key in ("MemTotal", "MemAvailable"):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        values[key] = round(int(m.group(1)) * 1024 / 1e9, 2) if m else None
    return values["MemTotal"], values["MemAvailable"]


def parse_dumpsys_battery(text: str) -> tuple[float | None, bool | None, bool | None]:
    """`dumpsys battery` -> (temperature °C, charging, plugged). Temperature is in tenths of °C."""
    temp = re.search(r"^\s*temperature:\s*(-?\d+)", text, re.M)
    status = re.search(r"^\s*status:\s*(\d+)", text, re.M)
    powered = re.findall(r"^\s*(?:AC|USB|Wireless|Dock) powered:\s*(true|false)", text, re.M)
    return (
        int(temp.group(1)) / 10 if temp else None,
        (int(status.group(1)) == 2) if status else None,  # BatteryManager.BATTERY_STATUS_CHARGING
        ("true" in powered) if powered else None,
    )


_HAL_TEMP = re.compile(r"Temperature\{mValue=(-?[0-9.]+), mType=(\d+), mName=([^,]*), mStatus=(\d+)\}")


def parse_dumpsys_thermal(text: str) -> tuple[int | None, float | None]:
    """`dumpsys thermalservice` -> (thermal status, hottest CPU temperature from the HAL)."""
    status = re.search(r"^\s*Thermal Status:\s*(\d+)", text, re.M)
    hal = text.split("Current temperatures from HAL:", 1)
    cpu = [float(m.group(1)) for m in _HAL_TEMP.finditer(hal[1] if len(hal) > 1 else "") if m.group(2) == "0"]
    return (int(status.group(1)) if status else None, max(cpu) if cpu else None)


def parse_df_available_kb(text: str) -> int | None:
    """toybox/coreutils `df -k DIR` -> available KiB on that filesystem."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2 or "Available" not in lines[0]:
        return None
    header = lines[0].replace("Mounted on", "Mounted_on").split()
    fields = lines[-1].split()
    col = header.index("Available")
    if len(fields) == len(header) - 1:
        col -= 1  # a long filesystem name sits alone on the line before the numbers
    elif len(fields) != len(header):
        return None
    try:
        return int(fields[col])
    except (IndexError, ValueError):
        return None


def facts_from_android(
    *,
    serial: str,
    props: dict[str, str],
    possible: str,
    freqs: str,
    meminfo: str,
    online: str = "",
    cpuinfo: str = "",
) -> DeviceFacts:
    """The texts read from a phone -> DeviceFacts."""
    release = props.get("ro.build.version.release")
    n_cores = parse_cpu_possible(possible)
    max_freqs = parse_cpu_max_freqs(freqs, n_cores=n_cores)
    total, avail = parse_meminfo(meminfo)
    soc = " ".join(x for x in (props.get("ro.soc.manufacturer"), props.get("ro.soc.model")) if x) or None
    return DeviceFacts(
        serial=serial,
        model=props.get("ro.product.model") or serial,
        manufacturer=props.get("ro.product.manufacturer"),
        soc=soc,
        hardware=props.get("ro.board.platform") or props.get("ro.hardware"),
        os_version=f"Android {release}" if release else "Android",
        sdk=props.get("ro.build.version.sdk"),
        abi=props.get("ro.product.cpu.abi"),
        n_cores=n_cores or (len(max_freqs) or None),
        cpu_max_freq_mhz=max_freqs,
        mem_total_gb=total,
        mem_avail_gb=avail,
        cpu_online=parse_cpu_list(online),
        cpu_parts=parse_cpuinfo_parts(cpuinfo),
    )
