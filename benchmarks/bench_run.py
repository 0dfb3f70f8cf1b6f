"""`miniupi bench --json` in a subprocess, shared by the benchmark scripts."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def bench_json(args: list[str]) -> dict[str, Any]:
    """The run's JSON result, or exit with its error in one line.

    The run starts in /tmp, so that `-m miniupi` imports the miniupi on
    PYTHONPATH (a worktree under comparison) rather than the one in the
    current directory.
    """
    out = subprocess.run([sys.executable, "-m", "miniupi", "bench", "--json", *args],
                         capture_output=True, text=True, cwd="/tmp")
    if out.returncode:
        raise SystemExit(f"miniupi bench {' '.join(args)} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)
