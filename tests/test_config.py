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
