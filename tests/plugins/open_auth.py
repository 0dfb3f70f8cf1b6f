"""A permissive auth kind for tests: `auth = "open"` asks nothing of anyone.

Loaded through a cluster file's `[plugins] load = ["open_auth"]` (with
tests/plugins on PYTHONPATH). It stands for any auth plugin that adds no
check of its own at a bank: the bank's caller check is core and must hold
anyway. It issues no sessions, so it cannot be the gateway's auth.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy

from miniupi.config import NodeConfig
from miniupi.contract.registry import Auth, AuthKind, Register

hookimpl = pluggy.HookimplMarker("miniupi")


def make_open_auth(node: NodeConfig, settings: Mapping[str, Any]) -> Auth:
    return Auth()


@hookimpl
def miniupi_register_kinds(register: Register) -> None:
    register.add_auth(AuthKind("open", make_open_auth))
