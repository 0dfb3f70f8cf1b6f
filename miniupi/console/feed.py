"""What every open console page is told, gathered once a tick and pushed to each page as it changes.

One loop polls for all pages, however many are open: the supervisor for each
program's state and pid (as `miniupi status` does) and each node's health
service over mTLS as the admin, while a page is open; the gateways' metrics
always, so that a page opened later finds the last minutes drawn. Each page's
subscription is a short queue; a page too slow to keep up is dropped and
its browser reconnects to a fresh snapshot, so no page can make the others
or the cluster wait. Events are named for the panel that shows them
("nodes", "metrics"); a new panel is one more event name.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from miniupi.config import CONSOLE, ClusterConfig, NodeConfig
from miniupi.console import metrics
from miniupi.ops.supervision import POSTGRES, NodeStatus, Supervisor, SupervisionError, is_serving
from miniupi.tls import CertsMissing

TICK_S = 1.0
HEALTH_TIMEOUT_S = 0.8
WINDOW_S = 300  # the charts' span: the last five minutes
QUEUE = 64  # events a page may lag behind before it is dropped


class Feed:
    """The cluster as the console sees it, and the pages that watch it."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        self.supervisor = Supervisor(cluster)
        self.series = metrics.Series(keep=int(WINDOW_S / TICK_S))
        self.latest: dict[str, str] = {}  # event name -> its last data, what a new page starts from
        self._pages: set[asyncio.Queue[tuple[str, str]]] = set()
        self._poke = asyncio.Event()

    # -- the pages ------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[tuple[str, str]]:
        """(event, data) for one page: the latest of each, then every change, until it is dropped."""
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE)
        self._pages.add(queue)
        self.poke()  # the nodes are watched only while a page is open: look now
        try:
            for name, data in list(self.latest.items()):
                yield name, data
            while True:
                item = await queue.get()
                if not item[0]:
                    return  # dropped: the browser reconnects
                yield item
        finally:
            self._pages.discard(queue)

    def publish(self, name: str, data: Any, *, keep: Any = None) -> None:
        """Send `data` to every page; a new page is given `keep` (default: `data` itself)."""
        text = json.dumps(data, separators=(",", ":"))
        self.latest[name] = text if keep is None else json.dumps(keep, separators=(",", ":"))
        for queue in list(self._pages):
            try:
                queue.put_nowait((name, text))
            except asyncio.QueueFull:
                self._pages.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(("", ""))

    def poke(self) -> None:
        """Look again now, not at the next tick: a control changed a node."""
        self._poke.set()

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Gather and publish once a tick until cancelled."""
        next_metrics = time.monotonic()
        while True:
            if self._pages:
                nodes = await self.nodes()
                if json.dumps(nodes, separators=(",", ":")) != self.latest.get("nodes"):
                    self.publish("nodes", nodes)
            else:  # nobody watches: spare the nodes the health checks, and the next page a stale view
                self.latest.pop("nodes", None)
            if time.monotonic() >= next_metrics:
                next_metrics += TICK_S
                await self._metrics()
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), TICK_S)

    async def nodes(self) -> dict[str, Any]:
        """Every program: the supervisor's state and pid, and for a node whether it serves."""
        try:
            statuses: list[NodeStatus] | None = await asyncio.to_thread(self.supervisor.status)
            problem = None
        except SupervisionError as e:
            statuses, problem = None, str(e)
        known = {s.name: s for s in statuses or []}
        rows = []
        names = [*known] if statuses is not None else [n.name for n in self.cluster.nodes]
        checks = {}
        for name in names:
            status = known.get(name)
            node = self._node(name)
            if node is not None and (status is None or status.pid is not None):
                checks[name] = asyncio.create_task(self._serving(node))
        for name in names:
            status, node = known.get(name), self._node(name)
            health = await checks[name] if name in checks else None
            rows.append({
                "name": name,
                "role": node.role if node is not None else name,
                "state": status.state if status else "UNSUPERVISED",
                "pid": status.pid if status else None,
                "address": status.address if status else node.address if node else "",
                "health": health,
                # The console does not stop itself from its own page.
                "controllable": statuses is not None and name != CONSOLE,
            })
        return {"cluster": self.cluster.name, "nodes": rows, "supervisor": problem}

    def _node(self, name: str) -> NodeConfig | None:
        if name in (POSTGRES, CONSOLE):
            return None
        return next((n for n in self.cluster.nodes if n.name == name), None)

    async def _serving(self, node: NodeConfig) -> str:
        try:
            ok = await asyncio.to_thread(is_serving, node, HEALTH_TIMEOUT_S)
        except CertsMissing:
            return "NO ADMIN CERTIFICATE"
        return "SERVING" if ok else "NOT SERVING"

    async def _metrics(self) -> None:
        gateways = metrics.scraped(self.cluster)
        if not gateways:
            note = "no metrics: no gateway has a metrics_port in the cluster file"
            if self.latest.get("metrics") is None:
                self.publish("metrics", {"note": note, "points": [], "window_s": WINDOW_S})
            return
        readings = await asyncio.gather(*(asyncio.to_thread(metrics.scrape, g) for g in gateways))
        by_name = {g.name: r for g, r in zip(gateways, readings)}
        silent = [name for name, r in by_name.items() if r is None]
        point = self.series.add(time.time(), by_name)
        note = f"no metrics from {', '.join(silent)}" if silent else None
        self.publish("metrics", {"note": note, "points": [point.as_dict()], "window_s": WINDOW_S},
                     keep={"note": note, "points": [p.as_dict() for p in self.series.points], "window_s": WINDOW_S})
