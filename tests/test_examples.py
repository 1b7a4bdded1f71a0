"""Smoke test: the usage example runs end to end (its own engine, in a subprocess) and prints its tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_usage_example_quick_run():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "examples/enhanced_llm_usage.py", "--quick"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=480,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-6000:]
    for heading in ("1. Basic generation", "2. Cache", "3. NLP analysis", "4. Concurrent batch", "5. Health check"):
        assert f"=== {heading}" in out, heading
    assert re.search(r"same request again\s*\| True\s*\| exact", out)  # the repeat is an exact hit
    assert re.search(r"中文 paraphrase\s*\| True\s*\| semantic", out), out  # a Chinese paraphrase, from the cache
    assert re.search(r"中文 other question\s*\| False", out)
    assert "-x faster" not in out and "x faster" in out
    assert "connectives:" in out and "clause" in out
    assert "repeated (cache) | 8" in out and "8/8" in out
    assert "overall: healthy" in out
    assert out.rstrip().endswith("done")
