"""The README is a user guide that cannot rot: its tables come from benchmarks/results/ (benchmarks/readme_tables.py),
it stays short with no dated log, and its quick-start commands run, fixture-sized."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

from edge.checkpoint import FIXTURE_CHECKPOINT

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def section_commands(heading: str) -> list[str]:
    """The `python -m edge...` lines of the bash blocks in one README section."""
    body = README[README.index(heading) :]
    body = body[: body.find("\n## ", 3)]
    blocks = re.findall(r"```bash\n(.*?)```", body, re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python -m edge.")]


def test_readme_is_short_and_has_no_dated_log():
    assert len(README.splitlines()) <= 250
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", README), "dated measurements belong in benchmarks/results/"


def test_copied_tables_match_the_results_files():
    mod = readme_tables()
    pages = {page: page.read_text() for page in mod.PAGES}
    for page, text in pages.items():
        assert mod.synced(text) == text, f"stale tables in {page}: run python benchmarks/readme_tables.py"
    names = [n for text in pages.values() for n in re.findall(r"<!-- table: ([\w-]+) -->", text)]
    assert sorted(names) == sorted(mod.blocks()), "every generated table is used once"
    assert sum(text.count("<!-- end table -->") for text in pages.values()) == len(names)


def test_quick_start_runs_with_the_fixture_in_place_of_llama(tmp_path):
    """The two commands' export and the quick start's export and generate, with the fixture as the checkpoint."""
    first = [line for line in re.findall(r"```bash\n(.*?)```", README, re.S)[1].split("&&") if "edge.export" in line]
    assert [c.strip() for c in first] == ["python -m edge.export"]
    commands = ["python -m edge.export", *section_commands("## Quick start with real weights")]
    assert [c.split()[2] for c in commands] == ["edge.export", "edge.export", "edge.generate"]
    for command in commands:
        command = command.replace("~/models/Llama-3.2-1B-Instruct", str(FIXTURE_CHECKPOINT))
        argv = [sys.executable, *shlex.split(command)[1:]]
        if "edge.generate" in command:
            argv += ["--max-new-tokens", "8"]
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        if "edge.generate" in command:
            assert proc.stdout.strip(), "generate printed no text"
            assert "tok/s" in proc.stderr
    assert (tmp_path / "out" / "fixture_8da4w" / "model.pte").is_file()
    assert (tmp_path / "out" / "1b" / "model.pte").is_file()
