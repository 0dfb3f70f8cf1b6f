"""Node logging through loguru: a line on stdout and in the node's own file.

Under load a node logs hundreds of lines a second. Writing each to the
stdout pipe (which supervisord relays) costs a system call and a context
switch per line, so stdout lines are gathered and written every
FLUSH_EVERY_S, and at once for warnings and errors.

The call log, a line for every call, is the hottest: handing loguru one
record per line cost the gateway about a sixth of its CPU under load.
Its lines are formatted here, exactly as loguru's format would, and
handed to loguru together every FLUSH_EVERY_S.
"""
from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
from typing import Any

from loguru import logger

from miniupi.config import NodeConfig

FLUSH_EVERY_S = 0.2
MAX_HELD_LINES = 1000
WARNING_NO = 30
ROTATE_AT_BYTES = 50 * 1000 * 1000
LINE_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {extra[node]} {message}"


class _BatchedStdout:
    """A loguru sink that writes stdout in batches."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def __call__(self, message: Any) -> None:
        self._parts.append(message)
        if message.record["level"].no >= WARNING_NO:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            data, self._parts = "".join(self._parts), []
            sys.stdout.write(data)
            sys.stdout.flush()


class _SizeRotation:
    """Rotate the log file past `limit` bytes, counting them instead of asking the file.

    loguru's own size rotation seeks the file before every line, which
    flushes its buffer: one write and one lseek per line, a third of a
    bank's CPU per call under load.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size: int | None = None

    def __call__(self, message: str, file: Any) -> bool:
        if self.size is None:  # the file as opened, which may hold lines from before a restart
            self.size = file.seek(0, os.SEEK_END)
        self.size += len(message)
        if self.size > self.limit:
            self.size = len(message)  # the line goes to the new file
            return True
        return False


class _CallLines:
    """Call-log lines in LINE_FORMAT, passed to every sink together as one raw loguru message.

    They go every FLUSH_EVERY_S, just before stdout's batch, and before any
    other record, so every sink keeps the order things happened in. Handed
    to loguru once per turn of the event loop instead, they cost a bank a
    fifth of its Python time per round: a round is a turn of its own.
    """

    def __init__(self) -> None:
        self.node = "-"
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""
        # Held while a block goes to loguru, so a record logged from another
        # thread cannot overtake it; reentrant for the block's own patcher call.
        self._lock = threading.RLock()

    def add(self, text: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        line = f"{self._stamp}.{int((now - second) * 1000):03d} INFO    {self.node} {text}\n"
        with self._lock:
            self._lines.append(line)
            if len(self._lines) >= MAX_HELD_LINES:  # bounded even if nothing flushes on time
                self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._lines:
                block, self._lines = "".join(self._lines), []
                logger.opt(raw=True).info(block)

    def before_record(self, record: Any) -> None:
        """loguru's patcher: every other record goes after the call lines logged before it."""
        if self._lines:
            self.flush()


_stdout = _BatchedStdout()
_call_lines = _CallLines()
atexit.register(_stdout.flush)
atexit.register(_call_lines.flush)  # atexit runs last-in first-out: call lines reach _stdout before its flush
_json_lines = False


def log_call(fields: dict[str, Any]) -> None:
    """The call log's line: fields as key=value text, or a JSON record with the fields apart."""
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    if _json_lines:
        logger.bind(**fields).info(text)
    else:
        _call_lines.add(text)


def setup_node_logging(node: NodeConfig, json_lines: bool = False) -> None:
    """Send this node's records to stdout (supervisord shows them) and to data_dir/NAME.log."""
    global _json_lines
    _json_lines = json_lines
    # Everything a node creates (logs, stores) is its owner's alone: 0600 files, 0700 directories.
    os.umask(0o077)
    logger.remove()
    fmt = LINE_FORMAT  # _CallLines writes the same
    _call_lines.node = node.name
    logger.configure(extra={"node": node.name}, patcher=_call_lines.before_record)
    logger.add(_stdout, format=fmt, serialize=json_lines, backtrace=False, diagnose=False)
    node.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logger.add(node.data_dir / f"{node.name}.log", format=fmt, serialize=json_lines, buffering=1 << 16,
               rotation=_SizeRotation(ROTATE_AT_BYTES), retention=5, backtrace=False, diagnose=False)


async def flush_logs_periodically() -> None:
    """Run for the node's life: call lines and stdout reach supervisord within FLUSH_EVERY_S."""
    try:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            _call_lines.flush()  # loguru reports a failing sink itself
            try:
                _stdout.flush()
            except OSError:  # supervisord's pipe is gone; the batch is dropped, the file has every line
                pass
    finally:
        _call_lines.flush()
        _stdout.flush()
