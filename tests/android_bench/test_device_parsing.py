"""Parsers for what adb and Android's tools print (formats of adb 29 / AOSP, toybox, dumpsys)."""

from __future__ import annotations

import pytest

from android_bench.device import (
    DeviceFacts,
    facts_from_android,
    parse_adb_devices,
    parse_cpu_max_freqs,
    parse_cpu_possible,
    parse_df_available_kb,
    parse_dumpsys_battery,
    parse_dumpsys_thermal,
    parse_getprop,
    parse_meminfo,
)
from android_bench.device_script import parse_run_output
from android_bench.placement import big_cores, cpu_mask

# `adb devices -l`: "%-22s %s" serial and state, then devpath, product:, model: (non-alphanumerics
# as '_'), device:, transport_id: (AOSP adb transport.cpp append_transport).
DEVICES_L = """\
* daemon not running; starting now at tcp:5037
* daemon started successfully
List of devices attached
1A2B3C4D5E             device usb:1-1 product:shiba model:Pixel_8 device:shiba transport_id:3
emulator-5554          offline transport_id:1
R5CX10ABCDE            unauthorized usb:1-2 transport_id:2
0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-3 transport_id:4

"""  # noqa: E501 (verbatim tool output)


def test_adb_devices_long_listing():
    entries = parse_adb_devices(DEVICES_L)
    assert [(e.serial, e.state) for e in entries] == [
        ("1A2B3C4D5E", "device"),
        ("emulator-5554", "offline"),
        ("R5CX10ABCDE", "unauthorized"),
        ("0123456789ABCDEF", "no permissions"),
    ]
    assert entries[0].model == "Pixel_8" and entries[0].product == "shiba"
    assert parse_adb_devices("List of devices attached\n\n") == []


GETPROP = """\
[ro.board.platform]: [pineapple]
[ro.build.version.release]: [14]
[ro.build.version.sdk]: [34]
[ro.product.cpu.abi]: [arm64-v8a]
[ro.product.manufacturer]: [OnePlus]
[ro.product.model]: [CPH2583]
[ro.soc.manufacturer]: [QTI]
[ro.soc.model]: [SM8650]
[persist.sys.locale]: [en-US]
"""

# OnePlus 12 (Snapdragon 8 Gen 3): 2 cores at 2265.6 MHz, 3 at 3148.8, 2 at 2956.8, 1 at 3302.4.
FREQS = "\n".join(
    f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq {khz}"
    for i, khz in enumerate([2265600, 2265600, 3148800, 3148800, 3148800, 2956800, 2956800, 3302400])
)

MEMINFO = "MemTotal:       15727420 kB\nMemFree:          812344 kB\nMemAvailable:    6517532 kB\n"


# Its /proc/cpuinfo: 2 Cortex-A520 (0xd80), 5 A720 (0xd81), 1 X4 (0xd82); one block per processor.
CPUINFO = "\n".join(
    f"processor\t: {i}\nBogoMIPS\t: 38.40\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
    f"CPU part\t: {part}\nCPU revision\t: 1\n"
    for i, part in enumerate(["0xd80"] * 2 + ["0xd81"] * 5 + ["0xd82"])
)


def test_facts_from_a_phone():
    f = facts_from_android(
        serial="R5CX",
        props=parse_getprop(GETPROP),
        possible="0-7\n",
        freqs=FREQS,
        meminfo=MEMINFO,
        online="0-7\n",
        cpuinfo=CPUINFO,
    )
    assert f.model == "CPH2583"
    assert f.manufacturer == "OnePlus"
    assert f.soc == "QTI SM8650"
    assert f.hardware == "pineapple"
    assert f.os_version == "Android 14"
    assert (f.sdk, f.abi, f.n_cores) == ("34", "arm64-v8a", 8)
    assert f.cpu_max_freq_mhz == (2265, 2265, 3148, 3148, 3148, 2956, 2956, 3302)
    assert f.mem_total_gb == pytest.approx(15727420 * 1024 / 1e9, abs=0.01)
    assert f.mem_avail_gb == pytest.approx(6517532 * 1024 / 1e9, abs=0.01)
    assert f.cpu_online == tuple(range(8)) and f.cpu_parts == {
        0: 0xD80,
        1: 0xD80,
        2: 0xD81,
        3: 0xD81,
        4: 0xD81,
        5: 0xD81,
        6: 0xD81,
        7: 0xD82,
    }
    # Big cores: all but the two Cortex-A520 -> cores 2-7, mask fc, no guess.
    assert big_cores(f) == ((2, 3, 4, 5, 6, 7), None)
    assert cpu_mask(big_cores(f)[0]) == "fc"


def test_big_cores_without_clusters():
    same = DeviceFacts("s", "m", None, None, None, "Android", None, None, 4, (2000, 2000, 2000, 2000), None, None)
    assert big_cores(same)[0] == (0, 1, 2, 3)
    unknown = DeviceFacts("s", "m", None, None, None, "Android", None, None, 2, (), None, None)
    assert big_cores(unknown)[0] == (0, 1)


@pytest.mark.parametrize("text, n", [("0-7\n", 8), ("0\n", 1), ("0-3,6-7", 6), ("", None), ("garbage", None)])
def test_cpu_possible(text, n):
    assert parse_cpu_possible(text) == n


def test_cpu_freqs_indexed_by_core():
    # cpu3's file is empty, and cores 0, 1 and 4-9 have no cpufreq folder (offline): nothing shifts.
    text = (
        "/x/cpu10/cpufreq/cpuinfo_max_freq 3000000\n/x/cpu2/cpufreq/cpuinfo_max_freq 1000000\n"
        "/x/cpu3/cpufreq/cpuinfo_max_freq \n"
    )
    assert parse_cpu_max_freqs(text) == (None, None, 1000) + (None,) * 7 + (3000,)
    assert parse_cpu_max_freqs(text, n_cores=12) == (None, None, 1000) + (None,) * 7 + (3000, None)


BATTERY = """\
Current Battery Service state:
  AC powered: false
  USB powered: true
  Wireless powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 3146000
  status: 2
  health: 2
  present: true
  level: 85
  scale: 100
  voltage: 4215
  temperature: 348
  technology: Li-ion
"""

THERMAL = """\
IsStatusOverride: false
ThermalEventListeners:
\tcallbacks: 1
\tkilled: false
\tbroadcasts count: -1
Thermal Status: 2
Cached temperatures:
\tTemperature{mValue=34.8, mType=2, mName=battery, mStatus=0}
HAL Ready: true
HAL connection:
\tThermalHAL 2.0 connected: yes
Current temperatures from HAL:
\tTemperature{mValue=48.2, mType=0, mName=cpu-0-0-0, mStatus=0}
\tTemperature{mValue=51.75, mType=0, mName=cpu-1-2-0, mStatus=2}
\tTemperature{mValue=55.0, mType=1, mName=gpu0, mStatus=0}
\tTemperature{mValue=34.8, mType=2, mName=battery, mStatus=0}
"""


def test_dumpsys_battery_and_thermal():
    assert parse_dumpsys_battery(BATTERY) == (34.8, True, True)
    unplugged = BATTERY.replace("USB powered: true", "USB powered: false").replace("status: 2", "status: 3")
    assert parse_dumpsys_battery(unplugged) == (34.8, False, False)
    assert parse_dumpsys_battery("") == (None, None, None)
    # The hottest CPU sensor (mType 0) among the HAL's current readings; the GPU does not count.
    assert parse_dumpsys_thermal(THERMAL) == (2, 51.75)
    assert parse_dumpsys_thermal("Can't find service: thermalservice") == (None, None)


@pytest.mark.parametrize(
    "text, kb",
    [
        # toybox df -k on Android
        (
            "Filesystem      1K-blocks     Used Available Use% Mounted on\n"
            "/dev/block/dm-48 115164260 29796904  85236284  26% /data\n",
            85236284,
        ),
        # coreutils with a long device name wrapped onto its own line
        (
            "Filesystem     1K-blocks  Used Available Use% Mounted on\n/dev/mapper/very-long-name\n"
            "                 1000  10  990  1% /tmp\n",
            990,
        ),
        ("Filesystem     1K-blocks  Used Available Use% Mounted on\ntmpfs            1000  10  990  1% /tmp\n", 990),
        ("df: /data/local/tmp/x: No such file or directory\n", None),
    ],
)
def test_df(text, kb):
    assert parse_df_available_kb(text) == kb


def test_meminfo_missing_fields():
    assert parse_meminfo("") == (None, None)


def test_run_script_output():
    text = (
        "@@EDGE_PID 4242\n"
        "@@EDGE_MEM State: R (running) VmHWM: 10240 kB VmRSS: 10240 kB \n"
        "@@EDGE_MEM State: S (sleeping) VmHWM: 1363148 kB VmRSS: 1201000 kB \n"
        "@@EDGE_MEM State: S (sleeping) VmHWM: 1363200 kB VmRSS: 1100000 kB \n"
        "@@EDGE_EXIT 0\n@@EDGE_STDOUT\nHello world\nPyTorchObserver {}\n\n@@EDGE_STDERR\nI stats\n"
    )
    out = parse_run_output(text)
    assert out.completed and out.exit_code == 0 and out.pid == 4242
    assert out.peak_rss_kb == 1363200  # the largest VmHWM
    assert out.rss_kb == 1201000  # the largest VmRSS
    assert out.rss_samples == 3
    assert out.stdout == "Hello world\nPyTorchObserver {}\n"
    assert out.stderr == "I stats\n"
    cut = parse_run_output("@@EDGE_PID 4242\n@@EDGE_MEM State: R (running) VmHWM: 10 kB VmRSS: 9 kB \n")
    assert not cut.completed and cut.exit_code is None and cut.peak_rss_kb == 10
