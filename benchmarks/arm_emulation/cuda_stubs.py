"""No-op aarch64 stand-ins for the CUDA libraries that PyPI's aarch64 torch wheel links against.

PyPI's aarch64 torch 2.13.0 is a CUDA build, and PyTorch's CPU wheel index is not reachable here: loading it
needs 15 CUDA libraries (2.9 GB of NVIDIA wheels). CUDA is never called under emulation, so each library is
replaced by a stub that defines every symbol torch imports from it, under the symbol versions torch asks for.
Written by hand because no package provides this; it needs `readelf` and `aarch64-linux-gnu-gcc`.

In:  the aarch64 site-packages holding torch, the arm64 root (its system libraries count as present).
Out: `build(site, out, root)` writes lib*.so stubs into `out` and returns their names.
"""

from __future__ import annotations

import collections
import re
import subprocess
from pathlib import Path

STUB_MSG = 'static const char stub_msg[] = "CUDA stub (no GPU under emulation)";'


def _readelf(flag: str, lib: Path) -> str:
    return subprocess.run(["readelf", flag, "-W", str(lib)], capture_output=True, text=True).stdout


def _torch_libraries(site: Path) -> list[Path]:
    lib = site / "torch" / "lib"
    return [p for p in lib.iterdir() if ".so" in p.name] + [p for p in (site / "torch").iterdir() if p.suffix == ".so"]


def _imports(libs: list[Path], present: set[str], sysdirs: list[Path]) -> tuple[set[str], dict]:
    """-> (needed libraries found nowhere, {library: {version: {(symbol, type)}}} that torch imports from them)."""
    missing: set[str] = set()
    syms: dict = collections.defaultdict(lambda: collections.defaultdict(set))
    for lib in libs:
        for name in re.findall(r"\(NEEDED\).*\[(.+?)\]", _readelf("-d", lib)):
            if name not in present and not any((d / name).exists() for d in sysdirs):
                missing.add(name)
        version_file, current = {}, None
        for line in _readelf("-V", lib).splitlines():
            if m := re.search(r"File: (\S+)", line):
                current = m.group(1)
            if (m := re.search(r"Name: (\S+)", line)) and current:
                version_file[m.group(1)] = current
        for line in _readelf("--dyn-syms", lib).splitlines():
            f = line.split()
            if len(f) >= 8 and f[6] == "UND" and "@" in f[7]:
                name, version = f[7].split("@", 1)
                version = version.split()[0]
                syms[version_file.get(version, "?")][version].add((name, f[3]))
    return missing, syms


def _unversioned_undefined(libs: list[Path], providers: list[Path]) -> list[tuple[str, str]]:
    """Unversioned imports (nccl, cusparseLt, the driver API, ...) that no library on hand defines."""
    defined = set()
    for lib in providers:
        if lib.is_file():
            defined |= {
                f[7].split("@")[0]
                for f in map(str.split, _readelf("--dyn-syms", lib).splitlines())
                if len(f) >= 8 and f[6] != "UND"
            }
    wanted = {
        (f[7], f[3])
        for lib in libs
        for f in map(str.split, _readelf("--dyn-syms", lib).splitlines())
        if len(f) >= 8 and f[6] == "UND" and f[4] == "GLOBAL" and "@" not in f[7]
    }
    return sorted((n, t) for n, t in wanted if n not in defined)


def _definition(name: str, kind: str) -> str:
    if kind == "OBJECT":
        return f"char {name}[256];"
    if name.startswith("__cuda"):  # registration hooks run by static constructors: succeed
        return f"long {name}(void) {{ return 0; }}"
    if "String" in name or "ErrorName" in name:
        return f"const char *{name}(void) {{ return stub_msg; }}"
    return f"long {name}(void) {{ return 100; }}"  # any CUDA call: an error code


def _compile(out: Path, soname: str, source: str, *, version_script: str = "", extra: tuple[str, ...] = ()) -> None:
    c = out / f"{soname}.c"
    c.write_text(source)
    cmd = [
        "aarch64-linux-gnu-gcc",
        "-shared",
        "-fPIC",
        "-O1",
        "-nostdlib",
        "-o",
        str(out / soname),
        str(c),
        f"-Wl,-soname,{soname}",
        *extra,
    ]
    if version_script:
        (out / f"{soname}.map").write_text(version_script)
        cmd.append(f"-Wl,--version-script={out / f'{soname}.map'}")
    subprocess.run(cmd, check=True)


def build(site: Path, out: Path, root: Path) -> list[str]:
    """aarch64 site-packages with torch, output folder, arm64 root -> names of the stub libraries written."""
    out.mkdir(parents=True, exist_ok=True)
    libs = _torch_libraries(site)
    sysdirs = [root / "usr/lib/aarch64-linux-gnu", root / "lib/aarch64-linux-gnu"]
    missing, syms = _imports(libs, {p.name for p in (site / "torch" / "lib").iterdir()}, sysdirs)
    providers = libs + [p for d in sysdirs for p in d.iterdir() if ".so" in p.name] + [root / "usr/bin/python3.11"]
    # ctypes and Python load with RTLD_NOW, so every strong import must resolve: the libcudart stub pulls these in.
    extra = _unversioned_undefined(libs, providers)
    _compile(out, "libcuda_stub_extra.so", "\n".join([STUB_MSG] + [_definition(n, t) for n, t in extra]) + "\n")
    for lib in sorted(missing):
        body = [STUB_MSG]
        versions = []
        for version, entries in sorted(syms.get(lib, {}).items()):
            names = sorted(entries)
            body += [_definition(n, t) for n, t in names]
            versions.append(f"{version} {{ global: {' '.join(n + ';' for n, _ in names)} }};")
        link = (f"-L{out}", "-Wl,--no-as-needed", "-lcuda_stub_extra") if lib.startswith("libcudart.so") else ()
        _compile(
            out, lib, "\n".join(body) + "\n", version_script="\n".join(versions) + "\n" if versions else "", extra=link
        )
    return sorted(missing)
