"""The migration guide's code: runnable blocks form one program, run once; the others must parse."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "migration_guide.md"
FENCE = re.compile(r"^```(python[^\n]*)\n(.*?)^```", re.M | re.S)


def blocks() -> list[tuple[str, str]]:
    return [(info.strip(), code) for info, code in FENCE.findall(GUIDE.read_text(encoding="utf-8"))]


def test_guide_marks_blocks_and_every_block_parses():
    found = blocks()
    infos = {info for info, _ in found}
    assert infos <= {"python", "python no-run"}, infos
    assert sum(info == "python" for info, _ in found) >= 4
    for info, code in found:  # "before" snippets use top-level await: parse them as such
        compile(code, f"<{info}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)


def test_runnable_blocks_run_as_one_program(tmp_path):
    program = "\n\n".join(code for info, code in blocks() if info == "python")
    assert 'if __name__ == "__main__":' in program  # the CPU engine starts with spawn
    path = tmp_path / "migration_program.py"
    path.write_text(program, encoding="utf-8")
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    out = proc.stdout
    assert "miss " in out and "hit " in out
    assert "status: healthy" in out
    assert "stopped handlers refuse requests" in out
