"""The node log file: rotated by size without asking the file before every line."""
from __future__ import annotations

from pathlib import Path

from loguru import logger

from miniupi.logs import _SizeRotation


def test_the_log_rotates_past_its_size_and_keeps_every_line(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    path.write_text("x" * 150 + "\n")  # lines from before a restart count towards the first file
    sink = logger.add(path, format="{message}", rotation=_SizeRotation(400), buffering=1 << 16)
    try:
        for i in range(40):
            logger.info(f"line {i:02d} " + "y" * 40)
    finally:
        logger.remove(sink)
    files = sorted(tmp_path.glob("node*.log"))
    assert len(files) >= 5
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert sorted(line[:7] for line in lines if line.startswith("line")) == [f"line {i:02d}" for i in range(40)]
    assert all(f.stat().st_size <= 400 for f in files)
