"""The cluster file: what it accepts, and how it says what is wrong."""
from __future__ import annotations

from pathlib import Path

import pytest

from miniupi.config import ConfigError, load_config, parse_config, split_address
from miniupi.nodes.setup_accounts import read_setup_file

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = {"cluster": {}, "gateway": {"port": 1}, "banks": {"bank_a": {"port": 2}}}


def test_demo_cluster_file_loads_with_its_topology() -> None:
    cluster = load_config(ROOT / "config" / "cluster.toml")
    assert [n.name for n in cluster.nodes] == ["gateway", "bank_a", "bank_b"]
    assert cluster.banks["bank_a"].storage == "sqlite"
    assert cluster.banks["bank_b"].storage == "json"
    assert cluster.prepare_timeout_s == 10
    for bank in cluster.banks.values():
        assert bank.accounts is not None and read_setup_file(bank.accounts)


def test_the_demo_serves_metrics_on_loopback_from_every_node_on_ports_of_their_own() -> None:
    cluster = load_config(ROOT / "config" / "cluster.toml")
    assert {n.name: n.metrics_port for n in cluster.nodes} == {"gateway": 9150, "bank_a": 9151, "bank_b": 9152}
    assert all(n.host == "127.0.0.1" for n in cluster.nodes)  # the endpoint listens on the node's host
    replicated = load_config(ROOT / "config" / "cluster-replicated.toml")
    assert {n.name: n.metrics_port for n in replicated.nodes} == {"gw1": 9150, "gw2": 9160, "bank_a": 9151,
                                                                   "bank_b": 9152}


def test_a_node_without_metrics_port_serves_no_metrics() -> None:
    assert all(n.metrics_port is None for n in parse_config(MINIMAL, Path("c.toml")).nodes)


def test_defaults_fill_what_the_file_leaves_out() -> None:
    cluster = parse_config(MINIMAL, Path("c.toml"))
    assert cluster.currency == "INR"
    assert cluster.gateway.storage == "sqlite" and cluster.gateway.auth == "session"
    assert cluster.banks["bank_a"].address == "127.0.0.1:2"
    assert cluster.plugins == ()


@pytest.mark.parametrize("change, words", [
    ({"gateway": {"port": "50050"}}, ["c.toml", "gateway.port", "port number"]),
    ({"gateway": {"port": 1, "storge": "json"}}, ["c.toml", "gateway.storge", "unknown key"]),
    ({"banks": {}}, ["c.toml", "banks", "at least one"]),
    ({"banks": {"Bank-A": {"port": 2}}}, ["banks.Bank-A", "lower-case"]),
    ({"banks": {"gateway": {"port": 2}}}, ["banks.gateway"]),
    ({"cluster": {"prepare_timeout_s": 0}}, ["cluster.prepare_timeout_s", "positive"]),
    ({"cluster": {"currency": "rupees"}}, ["cluster.currency", "ISO 4217"]),
    ({"plugins": {"load": [1]}}, ["plugins.load", "module names"]),
    ({"banks": {"bank_a": {"port": 1}}}, ["both use 127.0.0.1:1"]),
    # Every node certificate names localhost: a bank of that name would be passed by any node's leaf.
    ({"banks": {"localhost": {"port": 2}}}, ["banks.localhost", "not gateway"]),
    # A host is a name in the node's certificate, and clients accept any name that matches the identity.
    ({"banks": {"bank_a": {"port": 2, "host": "gateway"}}}, ["banks.bank_a.host", "identity's name"]),
    ({"banks": {"bank_a": {"port": 2, "host": "Bank_A."}}}, ["banks.bank_a.host", "identity's name"]),
    ({"gateway": {"port": 1, "host": "*.example.com"}}, ["gateway.host", "wildcards"]),
    ({"gateway": {"port": 1, "host": ""}}, ["gateway.host", "not empty"]),
    ({"cluster": {"daily_limit": 100000}}, ["cluster.daily_limit", "as a string"]),
    ({"cluster": {"daily_limit": "1,000.00"}}, ["cluster.daily_limit", "as a string"]),
    ({"cluster": {"time_zone": "Mars/Olympus"}}, ["cluster.time_zone", "IANA"]),
    ({"cluster": {"time_zone": "../../etc/passwd"}}, ["cluster.time_zone", "IANA"]),
    ({"daily_limits": {"alice": "5.00"}}, ["daily_limits.alice", "account address"]),
    ({"daily_limits": {"alice@bank_z": "5.00"}}, ["daily_limits.alice@bank_z", "bank_a"]),
    ({"daily_limits": {"alice@bank_a": "-5"}}, ["daily_limits.alice@bank_a", "amount"]),
    ({"daily_limits": []}, ["daily_limits"]),
    ({"gateway": {"port": 1, "metrics_port": "9150"}}, ["c.toml", "gateway.metrics_port", "port number"]),
    ({"gateway": {"port": 1, "metrics_port": 70000}}, ["c.toml", "gateway.metrics_port", "port number"]),
    ({"gateway": {"port": 1, "metrics_port": True}}, ["c.toml", "gateway.metrics_port", "port number"]),
    # A metrics port on another node's gRPC port, or on another node's metrics port, of the same host.
    ({"gateway": {"port": 1, "metrics_port": 2}}, ["c.toml", "key 'gateway.metrics_port'", "127.0.0.1:2",
                                                   "taken by bank_a"]),
    ({"gateway": {"port": 1, "metrics_port": 3}, "banks": {"bank_a": {"port": 2, "metrics_port": 3}}},
     ["key 'banks.bank_a.metrics_port'", "127.0.0.1:3 is taken by gateway.metrics_port"]),
])
def test_a_wrong_key_names_the_file_the_key_and_what_was_expected(change: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({**MINIMAL, **change}, Path("c.toml"))
    for word in words:
        assert word in str(e.value)


def test_the_daily_limit_has_a_cluster_default_and_per_account_exceptions() -> None:
    cluster = parse_config({**MINIMAL, "cluster": {"daily_limit": "100000.00", "time_zone": "Asia/Kolkata"},
                            "daily_limits": {"alice@bank_a": "500.50"}}, Path("c.toml"))
    assert cluster.daily_limit_of("bob@bank_a") == 10_000_000
    assert cluster.daily_limit_of("alice@bank_a") == 50_050
    assert cluster.zone.key == "Asia/Kolkata"
    unlimited = parse_config(MINIMAL, Path("c.toml"))
    assert unlimited.daily_limit_of("bob@bank_a") == 0 and unlimited.time_zone == "UTC"


def test_missing_file_and_bad_toml_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize("address", ["alice", "@bank_a", "alice@", "Alice@bank_a", "a@b@c", "al ice@bank_a"])
def test_bad_account_addresses_are_refused(address: str) -> None:
    with pytest.raises(ValueError):
        split_address(address)


def test_setup_file_errors_name_the_account(tmp_path: Path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[accounts.alice]\nbalance = 10\npassword = "x"\n')
    with pytest.raises(ConfigError, match=r"accounts\.alice\.balance"):
        read_setup_file(path)


REPLICATED = {"cluster": {"session_idle_s": 60},
              "gateways": {"gw1": {"port": 1}, "gw2": {"port": 3, "host": "10.0.0.2", "storage": "json"}},
              "banks": {"bank_a": {"port": 2}}}


def test_the_single_gateway_form_is_one_gateway_named_gateway() -> None:
    cluster = parse_config({**MINIMAL, "gateway": {"port": 1, "session_idle_s": 30}}, Path("c.toml"))
    assert list(cluster.gateways) == ["gateway"] and cluster.gateways["gateway"] is cluster.gateway
    assert (cluster.gateway.where, cluster.gateway.identity) == ("gateway", "gateway")
    assert cluster.gateway.data_dir == cluster.data_dir / "gateway"
    assert cluster.session_idle_s == 30 and cluster.gateway_named(None) is cluster.gateway


def test_several_gateways_are_replicas_of_one_identity_each_with_its_own_table_and_data() -> None:
    cluster = parse_config(REPLICATED, Path("c.toml"))
    assert [n.name for n in cluster.nodes] == ["gw1", "gw2", "bank_a"]
    assert list(cluster.gateways) == ["gw1", "gw2"] and cluster.gateway.name == "gw1"
    gw2 = cluster.gateways["gw2"]
    assert (gw2.role, gw2.identity, gw2.where, gw2.address, gw2.storage) == (
        "gateway", "gateway", "gateways.gw2", "10.0.0.2:3", "json")
    assert gw2.data_dir == cluster.data_dir / "gw2" and list(cluster.banks) == ["bank_a"]
    assert (cluster.session_idle_s, cluster.session_max_s) == (60, 24 * 3600)
    assert cluster.gateway_named("gw2") is gw2


def test_a_cluster_of_several_gateways_must_be_told_which_one_to_run() -> None:
    cluster = parse_config(REPLICATED, Path("c.toml"))
    with pytest.raises(ConfigError, match="gateways gw1, gw2; name one with --name"):
        cluster.gateway_named(None)
    with pytest.raises(ConfigError, match=r"no gateway named 'gw3' \(have gw1, gw2\)"):
        cluster.gateway_named("gw3")


@pytest.mark.parametrize("change, words", [
    ({"gateway": {"port": 5}}, ["both [gateway] and [gateways.NAME]", "use one form"]),
    ({"gateways": {}}, ["gateways", "at least one [gateways.NAME]"]),
    ({"gateways": {"gateway": {"port": 1}}}, ["gateways.gateway", "gateway name"]),
    ({"gateways": {"Gw1": {"port": 1}}}, ["gateways.Gw1", "lower-case"]),
    ({"gateways": {"treasury": {"port": 1}}}, ["gateways.treasury"]),
    ({"gateways": {"bank_a": {"port": 1}}}, ["banks.bank_a", "bank_a is a gateway's name"]),
    ({"gateways": {"gw1": {"port": 1}, "gw2": {"port": 1}}}, ["gw2 and gw1 both use 127.0.0.1:1"]),
    ({"gateways": {"gw1": {"port": 2}}}, ["both use 127.0.0.1:2"]),
    ({"gateways": {"gw1": {"port": 1, "prot": 5}}}, ["unknown key 'gateways.gw1.prot'"]),
    ({"gateways": {"gw1": {}}}, ["missing key 'gateways.gw1.port'"]),
    ({"gateways": {"gw1": {"port": 1, "host": "gateway"}}}, ["gateways.gw1.host", "identity's name"]),
    ({"gateways": {"gw1": {"port": 1, "session_idle_s": 5}}}, ["gateways.gw1.session_idle_s", "under [cluster]"]),
    ({"gateways": {"gw1": 1}}, ["gateways.gw1", "a table"]),
    ({"gateways": [1]}, ["gateways", "[gateways.NAME] table per gateway"]),
    ({"cluster": {"session_max_s": -1}}, ["cluster.session_max_s", "positive"]),
])
def test_a_wrong_gateways_table_is_one_line_naming_what_is_wrong(change: dict, words: list[str]) -> None:
    raw = {**REPLICATED, **change}
    if "gateway" in change:
        raw = {**REPLICATED, "gateway": change["gateway"]}
    with pytest.raises(ConfigError) as e:
        parse_config(raw, Path("c.toml"))
    assert "\n" not in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_a_file_with_no_gateway_names_both_forms() -> None:
    with pytest.raises(ConfigError, match=r"\[gateway\] table, or a \[gateways.NAME\] table per gateway"):
        parse_config({"cluster": {}, "banks": {"bank_a": {"port": 2}}}, Path("c.toml"))


def test_session_lifetimes_are_set_once_for_every_gateway() -> None:
    cluster = parse_config({**MINIMAL, "cluster": {"session_max_s": 600}}, Path("c.toml"))
    assert cluster.session_max_s == 600
    with pytest.raises(ConfigError, match="gateway.session_max_s': set once"):
        parse_config({**MINIMAL, "cluster": {"session_max_s": 600}, "gateway": {"port": 1, "session_max_s": 60}},
                     Path("c.toml"))


def test_the_replicated_example_loads_with_two_gateways_and_two_banks() -> None:
    cluster = load_config(ROOT / "config" / "cluster-replicated.toml")
    assert list(cluster.gateways) == ["gw1", "gw2"] and len(cluster.banks) == 2
