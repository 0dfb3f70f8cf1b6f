"""The client library: the same verbs as the command line, for Python programs.

    from miniupi.client import Client
    from miniupi.config import load_config

    with Client(load_config("config/cluster.toml")) as c:
        c.login("alice@bank_a", "password")
        c.pay("bob@bank_b", 12550)          # 125.50, in minor units

Payments that must survive being offline go through an outbox file, the
way `miniupi pay` sends them: queued durably first, sent in order, resent
with the same id until the gateway gives a final answer.

    with Client(cluster, outbox="outbox.sqlite3") as c:
        c.login("alice@bank_a", "password")
        entry = c.submit("bob@bank_b", 12550)   # entry.state: done, failed or queued
        report = c.sync()                       # later: send what is still queued

History comes a page at a time, newest first; a page's next_cursor reaches
the older entries (empty when there are none):

        page = c.history_page(limit=50)
        older = c.history_page(limit=50, before=page.next_cursor)

AsyncClient has the same methods as coroutines, and deliver_forever(), a
background task that retries on the backoff schedule (RetryPolicy).
"""
from miniupi.client.api import AsyncClient, Balance, Client, HistoryItem, HistoryPage, PayResult, Session
from miniupi.backoff import RetryPolicy
from miniupi.client.outbox import Outbox, OutboxEntry
from miniupi.client.sync import SyncReport

__all__ = ["AsyncClient", "Balance", "Client", "HistoryItem", "HistoryPage", "Outbox", "OutboxEntry", "PayResult",
           "RetryPolicy", "Session", "SyncReport"]
