"""The client library: the same verbs as the command line, for Python programs.

    from miniupi.client import Client
    from miniupi.config import load_config

    with Client(load_config("config/cluster.toml")) as c:
        c.login("alice@bank_a", "password")
        c.pay("bob@bank_b", 12550)          # 125.50, in minor units
"""
from miniupi.client.api import AsyncClient, Balance, Client, HistoryItem, PayResult, Session

__all__ = ["AsyncClient", "Balance", "Client", "HistoryItem", "PayResult", "Session"]
