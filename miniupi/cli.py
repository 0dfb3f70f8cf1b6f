"""`miniupi`: one command for nodes, the cluster, certificates and customers.

Every failure a user can cause ends in one line on stderr and a non-zero
exit; tracebacks are for bugs.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from miniupi import __version__
from miniupi.config import DEFAULT_CONFIG, ConfigError, load_config
from miniupi.errors import MiniupiError
from miniupi.inputs import count, positive_number
from miniupi.money import BadAmount
from miniupi.contract.manager import PluginError

if TYPE_CHECKING:
    from miniupi.nodes.settlement import Settlement

# `miniupi bench` defaults, kept apart so that an option given can be told from one left out.
BENCH_BANKS, BENCH_STORAGE, BENCH_PAYMENTS, BENCH_DURATION = 2, "sqlite", 10000, 10.0
BENCH_MAX_BANKS = 64
BENCH_MAX_GATEWAYS = 16
SHARED_STORE = "postgres"  # the one store several gateways may share

# A process killed by SIGPIPE exits 128 + 13 in the shell's eyes; we exit the same when the reader goes away.
EXIT_BROKEN_PIPE = 141
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake in the arguments told in one line like every other refusal."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"miniupi: {message} (see: {self.prog} --help)\n")


def _common(*, home: bool = False, json_output: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", help=f"cluster file (default: $MINIUPI_CONFIG or {DEFAULT_CONFIG})")
    if home:
        p.add_argument("--home", help="client home for the session and the outbox "
                                      "(default: $MINIUPI_HOME or ~/.local/state/miniupi)")
    if json_output:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def build_parser() -> argparse.ArgumentParser:
    from miniupi.client.verbs import VERBS

    parser = _Parser(prog="miniupi", description="A small distributed payment gateway.")
    parser.add_argument("--version", action="version", version=f"miniupi {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of these (miniupi COMMAND --help tells more):")

    def add(name: str, help: str, *, json_output: bool = False, home: bool = False,
            parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help,
                              parents=[*parents, _common(home=home, json_output=json_output)])

    p = add("run", "start the whole cluster under supervision")
    p.add_argument("cluster_file", nargs="?", metavar="CONFIG", help=f"cluster file (default {DEFAULT_CONFIG})")
    add("status", "show each node of the running cluster", json_output=True)
    for verb in ("stop", "start", "restart"):
        add(verb, f"{verb} one node of the running cluster").add_argument(
            "node", metavar="NODE", help="the node's name: a gateway's or a bank's")

    p = add("console", "serve the live web console of a cluster (loopback unless told)")
    p.add_argument("cluster_file", nargs="?", metavar="CONFIG", help=f"cluster file (default {DEFAULT_CONFIG})")
    p.add_argument("--host", help="listen on this address (default: the cluster file's [console], or 127.0.0.1)")
    p.add_argument("--port", type=count(65535), help="listen on this port (default: [console]'s, or 8700)")
    p.add_argument("--public", action="store_true", help="allow a --host beyond loopback")
    p.add_argument("--url", action="store_true", help="print the URL that signs a browser in, and exit")

    certs = add("certs", "cluster CA and certificates")
    certs.add_argument("action", choices=["init"], help="init: make whatever is missing")
    certs.add_argument("--force", action="store_true", help="make a new CA and re-issue every certificate")
    certs.add_argument("--host", action="append", default=[], help="extra host name or IP for node certificates")

    p = add("audit", "check every invariant across all nodes (admin)", json_output=True)
    p.add_argument("--wait", type=float, default=30.0, metavar="S",
                   help="seconds to let in-flight payments settle before judging (default 30)")

    p = add("bench", "load test: cross-bank payments with latency percentiles", json_output=True)
    p.add_argument("--live", action="store_true",
                   help="bench the running cluster of the cluster file instead of a throw-away one; "
                        "the accounts it opens and the money it issues there stay")
    p.add_argument("--banks", type=count(BENCH_MAX_BANKS), help=f"banks in the throw-away cluster (default {BENCH_BANKS})")
    p.add_argument("--storage", help=f"storage plugin of every node of the throw-away cluster (default {BENCH_STORAGE}); "
                                     f"{SHARED_STORE}: on a throw-away PostgreSQL server")
    p.add_argument("--bank-storage", help="the banks' storage plugin instead, when it differs from the gateways'")
    p.add_argument("--gateways", type=count(BENCH_MAX_GATEWAYS),
                   help=f"gateways in the throw-away cluster, sharing one store (default 1; more need --storage "
                        f"{SHARED_STORE}); payer i starts at gateway i %% N")
    p.add_argument("--accounts", type=count(10_000_000), default=1000, help="accounts opened per bank (default 1000)")
    p.add_argument("--concurrency", type=count(100_000), default=64, help="payers paying at once (default 64)")
    p.add_argument("--payments", type=count(100_000_000),
                   help=f"closed loop: how many payments (default {BENCH_PAYMENTS})")
    p.add_argument("--rate", type=positive_number(1_000_000), help="open loop: payments per second")
    p.add_argument("--duration", type=positive_number(86_400),
                   help=f"open loop, with --rate: seconds (default {BENCH_DURATION:g})")
    p.add_argument("--processes", type=count(64), default=1, help="load processes (default 1)")
    p.add_argument("--seed", type=int, help="random seed (printed; default random)")
    p.add_argument("--no-audit", action="store_true", help="skip the invariant check at the end")
    p.add_argument("--metrics", action="store_true",
                   help="every node of the throw-away cluster serves its Prometheus metrics (to measure their cost)")

    p = add("bank", "run one bank node in the foreground")
    p.add_argument("--name", required=True, help="the bank's name in the cluster file")
    p.add_argument("--port", type=int, help="listen on this port (default: the cluster file's)")
    p.add_argument("--log-json", action="store_true", help="structured log lines")
    p = add("gateway", "run a gateway node in the foreground")
    p.add_argument("--name", help="which gateway of a cluster file with several (default: the only one)")
    p.add_argument("--port", type=int, help="listen on this port (default: the cluster file's)")
    p.add_argument("--log-json", action="store_true", help="structured log lines")

    # The customer's verbs: their own arguments are those the REPL parses (client/verbs.py).
    for verb in VERBS.values():
        p = add(verb.name, verb.help, home=verb.uses_home, parents=[verb.parser])
        if verb.asks_password:
            p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = add("client", "interactive client (REPL) that sends queued payments in the background", home=True)
    p.add_argument("--retry-base", type=float, metavar="S", help="first retry wait (default $MINIUPI_RETRY_BASE_S or 5)")
    p.add_argument("--retry-cap", type=float, metavar="S", help="longest retry wait (default $MINIUPI_RETRY_CAP_S or 300)")
    return parser


def cmd_run(args: argparse.Namespace) -> None:
    from miniupi.ops import supervision
    from miniupi.ops.certs import init_certs
    from miniupi.contract.registry import check_plugins

    cluster = load_config(args.cluster_file or args.config)
    check_plugins(cluster)  # a bad plugin name stops us before certificates, data or supervisord
    written = init_certs(cluster)
    if written:
        print(f"made {len(written)} certificate files in {cluster.certs_dir}")
    code = supervision.run(cluster)
    if code:
        raise SystemExit(code)


def cmd_status(args: argparse.Namespace) -> None:
    from miniupi.ops.supervision import Supervisor

    rows = Supervisor(load_config(args.config)).status()
    if args.json:
        print(json.dumps([{"name": r.name, "state": r.state, "pid": r.pid, "address": r.address} for r in rows]))
        return
    for r in rows:
        print(f"{r.name:<12} {r.state:<10} pid {r.pid or '-':<8} {r.address}")


def cmd_control(args: argparse.Namespace) -> None:
    from miniupi.ops.supervision import Supervisor

    Supervisor(load_config(args.config)).control(args.command, args.node)
    print(f"{args.node}: {args.command} done")


def cmd_console(args: argparse.Namespace) -> None:
    from miniupi.console.server import console_settings, serve, sign_in_url

    cluster = load_config(args.cluster_file or args.config)
    settings = console_settings(cluster, args.host, args.port, args.public)
    if args.url:
        print(sign_in_url(cluster, settings))
        return
    serve(cluster, settings)


def cmd_certs(args: argparse.Namespace) -> None:
    from miniupi.ops.certs import init_certs

    cluster = load_config(args.config)
    written = init_certs(cluster, force=args.force, extra_hosts=args.host)
    for path in written:
        print(path)
    if not written:
        print(f"certificates in {cluster.certs_dir} are up to date")


def cmd_audit(args: argparse.Namespace) -> None:
    from miniupi.ops.audit import audit
    from miniupi.money import format_amount

    cluster = load_config(args.config)
    report = asyncio.run(audit(cluster, args.wait))
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(f"{report.banks} banks, {report.accounts} accounts, total {format_amount(report.total)} "
              f"{cluster.currency}; issued {format_amount(report.issued)} ("
              f"{format_amount(report.issued - report.issued_by_treasury)} at opening, "
              f"{format_amount(report.issued_by_treasury)} in {report.deposits} treasury deposits); "
              f"{report.committed} committed, {report.aborted} aborted, {len(report.in_doubt)} in doubt")
        print(_settlement_line(report.settlement, cluster.currency))
        for violation in report.violations:
            print(f"VIOLATION: {violation}")
        print("audit ok: every invariant holds" if report.ok else f"audit FAILED: {len(report.violations)} violations")
    if not report.ok:
        raise SystemExit(1)


def _settlement_line(s: Settlement, currency: str, most: int = 6) -> str:
    """What the banks owe each other for every committed payment, on one line (`--json` has every flow)."""
    from miniupi.money import format_amount

    def listed(items: list[str]) -> str:
        return ", ".join(items[:most]) + (f", and {len(items) - most} more" if len(items) > most else "")

    def payments(n: int) -> str:
        return f"{n} payment{'s' if n != 1 else ''}"

    if s.gross:
        line = (f"settlement: {format_amount(sum(f.amount for f in s.gross))} {currency} between banks in "
                f"{payments(sum(f.payments for f in s.gross))} ("
                + listed([f"{f.from_bank} -> {f.to_bank} {format_amount(f.amount)}" for f in s.gross])
                + "); net " + listed([f"{bank} {'+' if net > 0 else ''}{format_amount(net)}"
                                      for bank, net in sorted(s.net.items())]))
    else:
        line = "settlement: nothing between banks"
    within = sum(f.amount for f in s.intra_bank)
    return line + (f"; {format_amount(within)} {currency} within banks in "
                   f"{payments(sum(f.payments for f in s.intra_bank))}" if s.intra_bank else "")


def _bench_conflict(args: argparse.Namespace) -> str | None:
    """Why these bench options cannot all be meant at once, or None."""
    if args.payments is not None and (args.rate is not None or args.duration is not None):
        return "--payments (closed loop) cannot go with --rate or --duration (open loop)"
    if args.duration is not None and args.rate is None:
        return "--duration needs --rate (open loop); a closed loop runs --payments"
    if args.live and (args.metrics or any(v is not None for v in (args.banks, args.storage, args.bank_storage,
                                                                  args.gateways))):
        return ("--banks, --gateways, --storage, --bank-storage and --metrics shape a throw-away cluster; "
                "with --live the cluster file does")
    if (args.gateways or 1) > 1 and args.storage != SHARED_STORE:
        return (f"--gateways {args.gateways} needs --storage {SHARED_STORE}: several gateways share one store, "
                f"and {args.storage or BENCH_STORAGE} is one process's")
    if args.config is not None and not args.live:
        return ("--config names a running cluster, which bench drives only with --live; "
                "without both it boots a throw-away one")
    return None


def cmd_bench(args: argparse.Namespace) -> None:
    from miniupi.ops.bench import BenchOptions, default_seed, run_bench

    conflict = _bench_conflict(args)
    if conflict:  # a usage error, told as argparse tells its own: one line, exit 2
        print(f"miniupi: {conflict} (see: miniupi bench --help)", file=sys.stderr)
        raise SystemExit(2)
    banks = BENCH_BANKS if args.banks is None else args.banks
    payments = BENCH_PAYMENTS if args.payments is None else args.payments
    if banks < 2:  # every count is at least 1 and every number above 0 already (their argparse types)
        raise BadAmount("--banks must be at least 2: the benchmark pays across banks")
    if not args.live and os.environ.get("MINIUPI_CONFIG"):
        print("bench: a throw-away cluster; the cluster of $MINIUPI_CONFIG is benched only with --live",
              file=sys.stderr)
    result = run_bench(BenchOptions(
        config=args.config, live=args.live, banks=banks, storage=args.storage or BENCH_STORAGE,
        bank_storage=args.bank_storage or args.storage or BENCH_STORAGE, gateways=args.gateways or 1,
        accounts=args.accounts, concurrency=args.concurrency, payments=payments if args.rate is None else 0,
        rate=args.rate or 0.0, duration=BENCH_DURATION if args.duration is None else args.duration,
        processes=args.processes, seed=args.seed if args.seed is not None else default_seed(),
        audit=not args.no_audit, metrics=args.metrics), args.json)
    if result.get("audit_ok") is False:
        raise SystemExit(1)


@contextlib.contextmanager
def _refusing_to_start() -> Iterator[None]:
    """Any failure before a node serves means it cannot start: exit as NodeStartError does.

    Then supervisord does not restart it and `miniupi run` stops with its
    line; a bad plugin name keeps its own exit code 2. A bug shows its
    traceback first. A failure once the node served is a crash: restarted.
    """
    from miniupi.nodes.server import NodeStartError, has_served
    from miniupi.contract.registry import PluginChoiceError
    from miniupi.tls import CertsMissing

    try:
        yield
    except (PluginChoiceError, NodeStartError):
        raise
    except (ConfigError, PluginError, CertsMissing) as e:
        raise NodeStartError(str(e)) from None
    except Exception as e:
        if has_served():
            raise
        traceback.print_exc()
        raise NodeStartError(f"crashed while starting: {type(e).__name__}: {e}") from None


def cmd_bank(args: argparse.Namespace) -> None:
    from miniupi.nodes.bank import run_bank
    from miniupi.contract.registry import check_plugins

    cluster = load_config(args.config)  # a wrong cluster file is exit 2, before anything starts
    plugins = check_plugins(cluster)
    with _refusing_to_start():
        asyncio.run(run_bank(cluster, args.name, args.port, args.log_json, plugins))


def cmd_gateway(args: argparse.Namespace) -> None:
    from miniupi.nodes.gateway import run_gateway
    from miniupi.contract.registry import check_plugins

    cluster = load_config(args.config)  # a wrong cluster file is exit 2, before anything starts
    cluster.gateway_named(args.name)  # an unknown or missing --name is a wrong command line: exit 2 too
    plugins = check_plugins(cluster)
    with _refusing_to_start():
        asyncio.run(run_gateway(cluster, args.port, args.log_json, plugins, args.name))


def cmd_verb(args: argparse.Namespace) -> None:
    from miniupi.client.commands import run_verb
    from miniupi.client.verbs import VERBS

    run_verb(VERBS[args.command], load_config(args.config), args)


def cmd_client(args: argparse.Namespace) -> None:
    from miniupi.client.commands import run_client

    run_client(load_config(args.config), args)


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "run": cmd_run,
    "status": cmd_status,
    "stop": cmd_control,
    "start": cmd_control,
    "restart": cmd_control,
    "console": cmd_console,
    "certs": cmd_certs,
    "audit": cmd_audit,
    "bench": cmd_bench,
    "bank": cmd_bank,
    "gateway": cmd_gateway,
    "client": cmd_client,
}  # and each customer verb of client/verbs.py's table, run by cmd_verb


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user (or the world) said no, not that we have a bug."""
    from miniupi.nodes.server import NodeStartError
    from miniupi.ops.supervision import SupervisionError
    from miniupi.tls import CertsMissing

    return (MiniupiError, ConfigError, BadAmount, PluginError, CertsMissing, NodeStartError, SupervisionError)


# The node processes; every other command speaks to a user.
NODE_COMMANDS = frozenset({"run", "bank", "gateway"})


def _stdout_gone() -> int:
    """The reader of our output left (`miniupi queue --all | head -1`): stop quietly, as Unix tools do.

    Python's recipe: point stdout at devnull so the flush at exit cannot fail again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command is the first word that is not an option: the top level takes none with a value.
    if next((word for word in argv if not word.startswith("-")), None) not in NODE_COMMANDS:
        # gRPC's core writes lines of its own to stderr (a refused handshake, for one) when it is first
        # imported with its default verbosity, as building the parser does (the verbs' module); a user
        # gets our one line instead. Nodes keep them.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    args = build_parser().parse_args(argv)
    try:
        (COMMANDS[args.command] if args.command in COMMANDS else cmd_verb)(args)
        sys.stdout.flush()  # a reader that left shows here, not in the interpreter's last flush
    except KeyboardInterrupt:
        # After the terminal's ^C, on a line of its own.
        print(("\n" if sys.stderr.isatty() else "") + "miniupi: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return _stdout_gone()
    except Exception as e:
        if not isinstance(e, user_errors()):
            raise
        message: Any = getattr(e, "message", None) or str(e)
        print(f"miniupi: {message}", file=sys.stderr)
        return getattr(e, "exit_code", 1)  # 2: a wrong cluster file; 3: a node that cannot start
    return 0
