"""Node logging through loguru: a line on stdout and in the node's own file."""
from __future__ import annotations

import os
import sys

from loguru import logger

from miniupi.config import NodeConfig


def setup_node_logging(node: NodeConfig, json_lines: bool = False) -> None:
    """Send this node's records to stdout (supervisord shows them) and to data_dir/NAME.log."""
    # Everything a node creates (logs, stores) is its owner's alone: 0600 files, 0700 directories.
    os.umask(0o077)
    logger.remove()
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {extra[node]} {message}"
    logger.configure(extra={"node": node.name})
    logger.add(sys.stdout, format=fmt, serialize=json_lines, enqueue=False, backtrace=False, diagnose=False)
    node.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    logger.add(node.data_dir / f"{node.name}.log", format=fmt, serialize=json_lines, enqueue=True,
               rotation="50 MB", retention=5, backtrace=False, diagnose=False)
