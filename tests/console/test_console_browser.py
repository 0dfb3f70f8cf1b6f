"""The console in a real browser: the distribution's Chromium, driven by Playwright, against a real cluster
whose console `miniupi run` supervises (scripts/ensure_chromium.sh installs Chromium for make test and CI).

One cluster and one signed-in page for the module; the tests run in file order and each leaves every node
running. The last one saves the screenshot that the README shows (docs/console.png).
"""
from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from miniupi.config import NodeConfig
from miniupi.ops.testing import LocalCluster, free_port
from miniupi.ops.verdicts import INVARIANTS
from conftest import PASSWORD, ROOT, cli_login

SCREENSHOT = ROOT / "docs" / "console.png"
WAIT_MS = 15_000  # a node's stop or start shown on the page (each bounded by the supervisor's own waits)
AUDIT_MS = 60_000
# The gateway's metrics endpoint, where this version of the cluster file knows the key: the charts then
# draw the payments this module makes, and the screenshot shows them.
HAS_METRICS = "metrics_port" in {f.name for f in fields(NodeConfig)}
expect.set_options(timeout=WAIT_MS)  # every wait for the page is bounded, by this unless it says otherwise


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    spec = {
        "cluster": {"name": "demo", "prepare_timeout_s": 2, "call_timeout_s": 3},
        "gateway": {"storage": "sqlite", **({"metrics_port": free_port()} if HAS_METRICS else {})},
        "banks": {"bank_a": {"storage": "sqlite"}, "bank_b": {"storage": "json"}},
        "console": {},
    }
    accounts = {"bank_a": {"alice": ("1000.00", PASSWORD)}, "bank_b": {"bob": ("500.00", PASSWORD)}}
    with LocalCluster(tmp_path_factory.mktemp("console"), spec, accounts=accounts) as c:
        c.supervisor.wait_serving("console")
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("no chromium on PATH: scripts/ensure_chromium.sh installs it (make test runs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser: Browser, cluster: LocalCluster) -> Iterator[Page]:
    """A page signed in with the URL `miniupi console --url` prints."""
    r = cluster.cli("console", "--url")
    assert r.returncode == 0, r.stderr
    url = r.stdout.strip()
    assert url.startswith(f"http://127.0.0.1:{cluster.config.console.port}/?token=")
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    p.goto(url)
    assert "token" not in p.url  # signed in, and the key left the address bar
    expect(p.locator("#live")).to_have_text("live")
    yield p
    context.close()


def row(page: Page, node: str):
    return page.locator(f'tr[data-node="{node}"]')


@pytest.fixture(scope="module")
def alice(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client home of alice@bank_a, logged in at the command line. (The command line, not the library:
    Playwright's sync API runs an event loop of its own in this thread.)"""
    home = tmp_path_factory.mktemp("alice")
    cli_login(cluster, "alice@bank_a", home)
    return home


def pay(cluster: LocalCluster, home: Path, to: str, amount: str) -> subprocess.CompletedProcess[str]:
    return cluster.cli("pay", to, amount, home=home)


def test_the_console_lists_every_node_with_its_state_pid_address_and_health(page: Page,
                                                                           cluster: LocalCluster) -> None:
    for node in cluster.config.nodes:
        expect(row(page, node.name).locator(".state")).to_have_text("RUNNING")
        expect(row(page, node.name).locator(".health")).to_have_text("SERVING")
        expect(row(page, node.name).locator(".pid")).to_have_text(str(cluster.supervisor.pid(node.name)))
        expect(row(page, node.name).locator(".address")).to_have_text(node.address)
        expect(row(page, node.name).locator("button.stop")).to_be_enabled()
    # The console lists itself, without the buttons that would stop it from its own page.
    expect(row(page, "console").locator(".state")).to_have_text("RUNNING")
    expect(row(page, "console").locator("button")).to_have_count(0)


def test_a_bank_stopped_from_the_console_shows_stopped_and_a_payment_to_it_aborts(
        page: Page, cluster: LocalCluster, alice: Path) -> None:
    bank_b = row(page, "bank_b")
    pid = cluster.supervisor.pid("bank_b")
    bank_b.locator("button.stop").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog.locator(".question")).to_contain_text("Stop bank_b?")
    dialog.locator("button.cancel").click()  # asked, and told no: nothing happens
    expect(dialog).to_be_hidden()
    expect(bank_b.locator("button.stop")).to_be_enabled()
    assert cluster.supervisor.pid("bank_b") == pid

    bank_b.locator("button.stop").click()
    dialog.locator("button.ok").click()
    expect(bank_b.locator(".state")).to_have_text("STOPPED")
    expect(bank_b.locator(".health")).to_have_text("—")
    expect(page.locator("#nodes .note")).to_have_text("bank_b: stop done")
    assert cluster.supervisor.pid("bank_b") is None
    r = pay(cluster, alice, "bob@bank_b", "1.00")
    assert r.returncode != 0 and r.stderr.startswith("miniupi: payment aborted: bank bank_b"), r.stderr

    bank_b.locator("button.start").click()
    dialog.locator("button.ok").click()
    expect(bank_b.locator(".state")).to_have_text("RUNNING", timeout=30_000)
    expect(bank_b.locator(".health")).to_have_text("SERVING")
    assert pay(cluster, alice, "bob@bank_b", "1.00").returncode == 0  # it serves again


def test_a_control_request_without_the_console_key_is_refused(page: Page, cluster: LocalCluster) -> None:
    base = cluster.config.console.url
    cookie = next(c for c in page.context.cookies() if c["name"] == "miniupi_console")
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
    signed_in = {"Cookie": f"miniupi_console={cookie['value']}"}
    pid = cluster.supervisor.pid("bank_b")
    refused = {
        "no key": ({}, 401),
        "a wrong key": ({"Authorization": "Bearer not-the-key-of-this-console-at-all-0000"}, 401),
        "no CSRF token (another site's form)": (signed_in, 403),
        "another origin": ({**signed_in, "X-CSRF-Token": csrf, "Origin": "http://evil.example"}, 403),
        "another host name (DNS rebinding)": ({**signed_in, "X-CSRF-Token": csrf, "Host": "evil.example"}, 421),
    }
    for what, (headers, status) in refused.items():
        assert post(base + "api/nodes/bank_b/stop", headers) == status, what
        assert post(base + "api/audit", headers) == status, what
    assert cluster.supervisor.pid("bank_b") == pid
    # The cookie is the browser's alone: scripts cannot read it, and no other site's request carries it.
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    expect(row(page, "bank_b").locator(".state")).to_have_text("RUNNING")


def post(url: str, headers: dict[str, str]) -> int:
    """The status of a POST sent straight to the console (never through a proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, b"", headers, method="POST"), timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_audit_button_shows_every_invariant_holding(page: Page, cluster: LocalCluster, alice: Path) -> None:
    for amount in ("125.50", "40.00", "0.75"):
        assert pay(cluster, alice, "bob@bank_b", amount).returncode == 0
    page.locator("#run-audit").click()
    summary = page.locator("#audit .summary")
    expect(summary).to_contain_text("Every invariant holds", timeout=AUDIT_MS)
    expect(summary).to_contain_text("2 banks")
    expect(page.locator("#audit .invariants > li.holds")).to_have_count(len(INVARIANTS))
    expect(page.locator("#audit .invariants > li.fails")).to_have_count(0)
    for invariant in INVARIANTS:
        expect(page.locator(f'#audit li[data-invariant="{invariant.name}"] .verdict')).to_have_text("✓ holds")
    if HAS_METRICS:
        expect(page.locator("#traffic .charts")).to_be_visible()
    else:
        expect(page.locator("#traffic .note")).to_contain_text("no gateway has a metrics_port")
    expect(page.locator("#nodes .note")).to_be_hidden()  # the last control's success has faded
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_console_comes_back_when_the_supervisor_restarts_it(page: Page, cluster: LocalCluster) -> None:
    r = cluster.cli("restart", "console")
    assert r.returncode == 0 and r.stdout.strip() == "console: restart done", r.stderr
    # The page reconnects by itself (the key is kept across restarts) and is live again.
    expect(page.locator("#live")).to_have_text("live", timeout=WAIT_MS)
    expect(row(page, "console").locator(".pid")).to_have_text(str(cluster.supervisor.pid("console")))
