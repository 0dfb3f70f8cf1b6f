"""The audit on demand: `miniupi audit --json` as the admin, judged invariant by invariant.

It runs as a child process, as the command line runs it: the audit reads
every node's stream and checks each id, work that on a big cluster would
hold the console's own loop (and every page's updates) for its whole
length; a child has its own interpreter and may use the other core. One
audit runs at a time, and none runs longer than AUDIT_TIMEOUT_S.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from miniupi.config import ClusterConfig
from miniupi.ops.verdicts import verdicts

SETTLE_S = 10.0  # how long payments in flight may take to settle before the audit judges them
AUDIT_TIMEOUT_S = 120.0


class AuditBusy(Exception):
    """An audit is already running."""


class Auditor:
    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self._lock = asyncio.Lock()

    async def run(self) -> dict[str, Any]:
        """The report as `miniupi audit --json` gives it, with each invariant's verdict, or an error line."""
        if self._lock.locked():
            raise AuditBusy("an audit is already running")
        async with self._lock:
            return await self._run()

    async def _run(self) -> dict[str, Any]:
        argv = [sys.executable, "-m", "miniupi", "audit", "--json", "--wait", str(SETTLE_S),
                "--config", str(self.cluster.path)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "GRPC_VERBOSITY": "NONE"})
        try:
            out, err = await asyncio.wait_for(proc.communicate(), AUDIT_TIMEOUT_S)
        except TimeoutError:
            return {"error": f"the audit gave no result within {AUDIT_TIMEOUT_S:g} s"}
        finally:
            if proc.returncode is None:  # timed out, or the page went away: leave no audit running
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.returncode not in (0, 1):  # 1: violations, with the report on stdout
            line = (err.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            return {"error": line.removeprefix("miniupi: ")}
        report = json.loads(out)
        report["invariants"] = [v.as_dict() for v in verdicts(report["violations"])]
        return report
