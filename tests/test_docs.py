"""The docs keep up with the code: every hook documented with its exact signature and tested,
the example plugin works in a real cluster, and no doc points outside the repository."""
from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from miniupi.contract import hookspecs
from miniupi.contract.manager import make_plugin_manager
from miniupi.ops.testing import LocalCluster
from conftest import lines_with, wait_for

ROOT = Path(__file__).resolve().parent.parent
PLUGINS_MD = ROOT / "docs" / "PLUGINS.md"


def hook_specs() -> dict[str, Callable[..., Any]]:
    """Every hook of the specs module, as pluggy sees it: marked with the project's hookspec marker."""
    return {name: f for name, f in vars(hookspecs).items()
            if name.startswith("miniupi_") and hasattr(f, "miniupi_spec")}


def signature(name: str, spec: Callable[..., Any]) -> str:
    """`miniupi_x(node: NodeConfig, txn_id: str) -> None`, annotations as written in the specs."""
    sig = inspect.signature(spec)
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


def test_the_specs_module_holds_every_hook_of_the_plugin_manager() -> None:
    pm = make_plugin_manager()
    assert {name for name in dir(pm.hook) if name.startswith("miniupi_")} == set(hook_specs())
    assert len(hook_specs()) >= 12


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_has_a_heading_with_its_exact_signature_in_the_plugin_guide(name: str) -> None:
    heading = f"### `{signature(name, hook_specs()[name])}`"
    assert heading in PLUGINS_MD.read_text().splitlines(), f"docs/PLUGINS.md lacks the heading: {heading}"


def test_the_plugin_guide_documents_no_hook_that_does_not_exist() -> None:
    documented = re.findall(r"^### `(miniupi_\w+)\(", PLUGINS_MD.read_text(), re.MULTILINE)
    assert sorted(documented) == sorted(hook_specs())


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_is_named_by_a_test(name: str) -> None:
    tests = [p for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py"]
    assert any(re.search(rf"\b{name}\b", p.read_text()) for p in tests), f"no tests/test_*.py names {name}"


def test_the_example_plugin_counts_every_decision_in_a_real_cluster(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/count_decisions.py, loaded as docs/PLUGINS.md says: [plugins] load and PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT / "examples"),
                                                                   os.environ.get("PYTHONPATH")])))
    spec = {"cluster": {}, "gateway": {}, "banks": {"bank_a": {}, "bank_b": {"storage": "json"}},
            "plugins": {"load": ["count_decisions"]}}
    with LocalCluster(tmp_path, spec, accounts={"bank_a": {"alice": ("10.00", "pw")},
                                                "bank_b": {"bob": ("0", "pw")}}) as cluster:
        with cluster.client() as c:
            c.login("alice@bank_a", "pw")
            c.pay("bob@bank_b", 100)
            with pytest.raises(Exception, match="insufficient funds"):
                c.pay("bob@bank_b", 100_000)
        wait_for("the count of both decisions",
                 lambda: lines_with(cluster, "gateway", "decisions so far: 1 committed, 1 aborted"))
        assert lines_with(cluster, "gateway", "count_decisions: counting the decisions of gateway at")
        assert not lines_with(cluster, "bank_a", "count_decisions")  # the banks decide nothing



def test_the_cluster_file_in_the_operations_guide_shows_every_default_as_the_code_has_it(tmp_path: Path) -> None:
    """docs/OPERATIONS.md spells out every key with its default: it must load, pass the plugin
    check, and mean exactly what a file giving only the required keys means."""
    import tomllib

    from miniupi.config import parse_config
    from miniupi.contract.registry import check_plugins

    text = (ROOT / "docs" / "OPERATIONS.md").read_text()
    block = re.search(r"^## The cluster file$.*?^```toml\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block, "docs/OPERATIONS.md has no cluster file"
    documented = parse_config(tomllib.loads(block.group(1)), tmp_path / "c.toml")
    plugins = check_plugins(documented)
    minimal = parse_config({"cluster": {}, "gateway": {"port": 50050},
                            "banks": {"bank_a": {"port": 50051}, "bank_b": {"port": 50052, "storage": "json"}}},
                           tmp_path / "c.toml")
    fields = ["name", "data_dir", "certs_dir", "currency", "prepare_timeout_s", "call_timeout_s", "session_idle_s",
              "session_max_s", "login_attempts", "login_lockout_s", "max_opening_deposit", "max_balance",
              "log_json", "daily_limit", "time_zone", "gateway_lease_s", "daily_limits", "plugins"]
    from dataclasses import fields as dataclass_fields

    from miniupi.config import ClusterConfig, ConsoleConfig, PostgresConfig
    # [postgres] and [console] have no default (absent: no managed server, no console): the guide shows
    # one of each, [console] with every key at its default.
    assert set(fields) == {f.name for f in dataclass_fields(ClusterConfig)} - {"path", "raw", "node_fields", "postgres",
                                                                               "console"}
    assert minimal.postgres is None and documented.postgres == PostgresConfig(managed=True, port=5440, bin_dir=None)
    with_console = parse_config({**tomllib.loads(block.group(1)), "console": {}}, tmp_path / "c.toml")
    assert minimal.console is None and documented.console == with_console.console == ConsoleConfig(
        host="127.0.0.1", port=8700, public=False)
    assert {f: getattr(documented, f) for f in fields} == {f: getattr(minimal, f) for f in fields}
    for name in ("gateway", "bank_a", "bank_b"):
        a, b = documented.node(name), minimal.node(name)
        assert (a.host, a.port, a.storage, a.auth, a.metrics_port) == (b.host, b.port, b.storage, b.auth, None)
    from miniupi.config import NodeConfig
    # Every key of a node's table is shown, the ones without a default as a comment.
    for key in {f.name for f in dataclass_fields(NodeConfig)} - {"name", "role", "cluster", "plugin_settings"}:
        assert re.search(rf"^#? ?{key} = ", block.group(1), re.MULTILINE), f"the guide's cluster file lacks {key}"
    json_kind = plugins.kinds.storage["json"]
    assert plugins.settings["bank_b", "json"] == {s.name: s.default for s in json_kind.settings}


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_point_only_inside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text and "DESIGN.md" not in text
    for target in re.findall(r"\]\(([^)#\s]+)", text):  # markdown links
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        assert (doc.parent / target).resolve().is_relative_to(ROOT), (doc.name, target)
        assert (doc.parent / target).exists(), (doc.name, target)
