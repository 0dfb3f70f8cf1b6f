"""Hooks are called by attribute on a node's NodeHooks, and cost next to nothing when unimplemented."""
from __future__ import annotations

import pytest
from loguru import logger

from miniupi.contract import manager
from miniupi.contract.hookspecs import hookimpl
from miniupi.contract.manager import NodeHooks, fire_after, make_plugin_manager, plugin_manager


class Votes:
    def __init__(self) -> None:
        self.seen: list[tuple[object, str, bool]] = []

    @hookimpl
    def miniupi_after_vote(self, node: object, txn_id: str, yes: bool) -> None:
        self.seen.append((node, txn_id, yes))


def test_a_hook_reaches_every_plugin_with_the_node_bound() -> None:
    node, first, second = object(), Votes(), Votes()
    hooks = NodeHooks(plugin_manager(first, second), node)  # type: ignore[arg-type]
    hooks.miniupi_after_vote(txn_id="t1", yes=True)
    assert first.seen == second.seen == [(node, "t1", True)]


def test_a_hook_no_plugin_implements_is_a_no_op_looked_up_once() -> None:
    hooks = NodeHooks(plugin_manager(Votes()), None)
    hooks.miniupi_before_apply(txn_id="t1", decision="COMMITTED")
    # Kept on the instance: the next call is a plain attribute lookup, not a search of the plugins.
    assert vars(hooks)["miniupi_before_apply"] is manager._unimplemented
    assert "miniupi_after_vote" not in vars(hooks)


def test_a_name_the_hook_specs_lack_is_an_error_not_a_silent_no_op() -> None:
    hooks = NodeHooks(plugin_manager(), None)
    with pytest.raises(AttributeError):
        hooks.miniupi_before_vot(txn_id="t1", yes=True)


def test_fire_after_logs_a_failing_observer_instead_of_raising() -> None:
    class Broken:
        @hookimpl
        def miniupi_after_apply(self, txn_id: str) -> None:
            raise RuntimeError("observer down")

    hooks = NodeHooks(plugin_manager(Broken()), None)
    logged: list[str] = []
    sink = logger.add(logged.append, level="ERROR", format="{message}")
    try:
        fire_after(hooks.miniupi_after_apply, txn_id="t1", decision="COMMITTED")
    finally:
        logger.remove(sink)
    assert [line.split(":")[0] for line in logged] == ["hook miniupi_after_apply failed"]
    with pytest.raises(RuntimeError):
        hooks.miniupi_after_apply(txn_id="t1", decision="COMMITTED")  # a plain call raises: the caller decides


def test_miniupi_trace_plugins_prints_every_hook_call(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MINIUPI_TRACE_PLUGINS", "1")
    pm = make_plugin_manager()
    pm.register(Votes())
    NodeHooks(pm, None).miniupi_after_vote(txn_id="traced-id", yes=True)
    err = capsys.readouterr().err
    assert "miniupi_after_vote" in err and "traced-id" in err
