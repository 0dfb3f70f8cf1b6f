"""pytest fixtures for booting miniupi clusters (installed as a `pytest11` plugin)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from miniupi.ops.postgres_server import LocalPostgres
from miniupi.ops.testing import LocalCluster, local_postgres


@pytest.fixture
def miniupi_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalCluster]]:
    """Boot clusters for one test; every one is stopped at teardown.

    Call it with a cluster spec, as a dict or the path of a TOML file, and
    optionally the accounts each bank opens at first start::

        def test_pay(miniupi_cluster):
            cluster = miniupi_cluster({"cluster": {}, "gateway": {},
                                       "banks": {"bank_a": {}, "bank_b": {"storage": "json"}}},
                                      accounts={"bank_a": {"alice": ("100.00", "pw")}})
            with cluster.client() as c:
                c.login("alice@bank_a", "pw")

    Ports, data_dir and certs_dir are filled in (free ports on 127.0.0.1,
    a temporary directory; a `"console": {}` table gets a port too, and
    `miniupi run` serves the web console there). The cluster runs through `miniupi run`, under
    supervisord; `cluster.stop_node`, `start_node`, `restart_node` and
    `kill_node` control single nodes, and `cluster.cli(...)` runs the
    command line against it. With no spec, a gateway and two banks; a
    spec with `"gateways": {"gw1": {}, "gw2": {}}` instead of `"gateway"`
    boots several gateways, and clients fail over between them.
    """
    started: list[LocalCluster] = []

    def boot(spec: dict[str, Any] | str | Path | None = None, **kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), spec, **kwargs)
        started.append(cluster)
        return cluster.start()

    yield boot
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="session")
def miniupi_postgres() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server for the whole session, on a free port of 127.0.0.1, data in a temporary
    directory, stopped and removed at the end. Pass it to a cluster to put its postgres nodes there::

        def test_pay_on_postgres(miniupi_cluster, miniupi_postgres):
            cluster = miniupi_cluster({"cluster": {}, "gateway": {"storage": "postgres"},
                                       "banks": {"bank_a": {"storage": "postgres"}, "bank_b": {}}},
                                      postgres=miniupi_postgres)

    Each cluster gets a database of its own on it. `connection(dbname)` gives
    psycopg's connection keywords (the superuser `miniupi`, its password read
    from `password_file`), `create_database(name)` makes another database.
    Do not stop or restart it: other tests share it; a test that restarts
    PostgreSQL boots its own with miniupi.ops.testing.local_postgres().
    """
    with local_postgres() as server:
        yield server
