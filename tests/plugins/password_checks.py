"""A third-party plugin, loaded through a cluster file's [plugins] load.

It writes a line for every password a bank really checks (not for logins
refused without a check, such as at a locked account) to
DATA_DIR/password_checks.txt, so a test can count the guesses a lockout
let through.
"""
from __future__ import annotations

import pluggy

from miniupi.config import NodeConfig

hookimpl = pluggy.HookimplMarker("miniupi")
FILE = "password_checks.txt"


@hookimpl
def miniupi_before_password_check(node: NodeConfig, account: str) -> None:
    with open(node.cluster.data_dir / FILE, "a") as f:
        f.write(f"{node.name} {account}\n")
