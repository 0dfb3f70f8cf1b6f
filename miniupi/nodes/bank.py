"""The bank node: a gRPC adapter over the Ledger, and its start-up."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from loguru import logger

from miniupi.config import ClusterConfig, ConfigError
from miniupi.errors import AlreadyExists, BalanceCeiling, InvalidAmount, InvalidArgument, MiniupiError, caught, unwrap
from miniupi.nodes.logs import setup_node_logging
from miniupi.nodes.in_doubt import resolve_in_doubt
from miniupi.money import format_amount
from miniupi.nodes.passwords import MAX_PASSWORD, hash_problem
from miniupi.contract.store import StoreDamaged
from miniupi.inputs import quoted
from miniupi.nodes.bank_store import LIVE_TABLES, load_live
from miniupi.nodes.ledger import Ledger
from miniupi.nodes.participants import Leg
from miniupi.nodes.server import NodeStartError, open_store, serve
from miniupi.nodes.setup_accounts import read_setup_file
from miniupi.validate import account_name, new_account_name, opening_deposit
from miniupi.validate import positive_amount as validate_positive_amount, txn_id as valid_txn_id
from miniupi.contract.manager import NodeHooks
from miniupi.contract.registry import Plugins, check_plugins
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2

DEFAULT_HISTORY = 50
MAX_LEGS = 16
AUDIT_CHUNK = 2000
MAX_HISTORY = 1000


class BankServicer(bank_pb2_grpc.BankServicer):
    def __init__(self, ledger: Ledger, cluster: ClusterConfig) -> None:
        self.ledger, self.cluster = ledger, cluster
        # DecideAndPrepare streams waiting for their next round. The gateway
        # keeps its stream open for good, so a stopping bank ends these
        # rather than wait out the whole shutdown grace for them.
        self._between_rounds: set[asyncio.Task[Any]] = set()
        self._ended: set[asyncio.Task[Any]] = set()  # cancelled by end_streams, to end with OK
        self._stopping = False

    def _money(self, minor: int) -> common_pb2.Money:
        return common_pb2.Money(minor=minor, currency=self.ledger.currency)

    async def _decide_and_prepare(
        self, decisions: Sequence[tuple[str, bool]], prepares: Sequence[bank_pb2.PrepareRequest],
    ) -> tuple[list[bool | MiniupiError], list[bank_pb2.PrepareReply | MiniupiError]]:
        """Every answer made durable by one write; a malformed item is refused alone."""
        checked_decisions = [caught(lambda d: (valid_txn_id(d[0]), d[1]), d) for d in decisions]
        checked_prepares = [caught(_prepare_spec, p) for p in prepares]
        outcomes, votes = await self.ledger.decide_and_prepare(
            [d for d in checked_decisions if not isinstance(d, MiniupiError)],
            [p for p in checked_prepares if not isinstance(p, MiniupiError)])
        return _merge(checked_decisions, outcomes), [
            v if isinstance(v, MiniupiError) else bank_pb2.PrepareReply(
                yes=v.yes, refusal=v.refusal or "VOTE_REFUSAL_UNSPECIFIED", detail=v.detail)
            for v in _merge(checked_prepares, votes)]

    async def Prepare(self, request: bank_pb2.PrepareRequest, context: grpc.aio.ServicerContext) -> bank_pb2.PrepareReply:
        return unwrap((await self._decide_and_prepare((), [request]))[1][0])

    async def Commit(self, request: bank_pb2.DecisionRequest, context: grpc.aio.ServicerContext) -> bank_pb2.DecisionReply:
        return bank_pb2.DecisionReply(known=unwrap((await self._decide_and_prepare([(request.txn_id, True)], ()))[0][0]))

    async def Abort(self, request: bank_pb2.DecisionRequest, context: grpc.aio.ServicerContext) -> bank_pb2.DecisionReply:
        return bank_pb2.DecisionReply(known=unwrap((await self._decide_and_prepare([(request.txn_id, False)], ()))[0][0]))

    async def DecideAndPrepare(self, requests: AsyncIterator[bank_pb2.DecideAndPrepareRequest],
                               context: grpc.aio.ServicerContext) -> AsyncIterator[bank_pb2.DecideAndPrepareReply]:
        """One reply per round, in order: the gateway matches them by position."""
        task = asyncio.current_task()
        assert task is not None
        self._between_rounds.add(task)
        try:
            async for request in requests:
                self._between_rounds.discard(task)
                reply = await self._round(request)  # a MiniupiError ends the stream through the error door
                yield reply
                if self._stopping:
                    return
                self._between_rounds.add(task)
        except asyncio.CancelledError:
            if task not in self._ended:
                raise  # the gateway gave up, or the grace ran out: the call is cancelled
            # End the call with OK, which the server counts as finished; a cancelled
            # handler leaves the call open until the shutdown grace runs out.
            task.uncancel()
        finally:
            self._between_rounds.discard(task)
            self._ended.discard(task)

    def end_streams(self) -> None:
        """End every stream waiting for its next round; a round in progress is answered first.

        A round that reaches the bank as its stream ends goes unanswered and
        unread: the gateway reads the clean end of the stream and sends the
        round once more on a new stream, which reaches the restarted bank.
        """
        self._stopping = True
        self._ended |= self._between_rounds
        for task in self._between_rounds:
            task.cancel()

    async def _round(self, request: bank_pb2.DecideAndPrepareRequest) -> bank_pb2.DecideAndPrepareReply:
        outcomes, votes = await self._decide_and_prepare([(d.txn_id, d.commit) for d in request.decisions],
                                                         request.prepares)
        return bank_pb2.DecideAndPrepareReply(
            outcomes=[bank_pb2.DecisionOutcome(applied=False, error=r.message) if isinstance(r, MiniupiError)
                      else bank_pb2.DecisionOutcome(applied=True, known=r) for r in outcomes],
            votes=[bank_pb2.PrepareReply(yes=False, refusal=bank_pb2.INVALID_REQUEST, detail=v.message)
                   if isinstance(v, MiniupiError) else v for v in votes])

    async def OpenAccount(self, request: bank_pb2.OpenAccountRequest, context: grpc.aio.ServicerContext) -> bank_pb2.AccountReply:
        if not 0 < len(request.password) <= MAX_PASSWORD:
            raise InvalidArgument(f"password must be 1 to {MAX_PASSWORD} characters")
        # The gateway checks these too; the bank does not take its word for them.
        initial = opening_deposit(request.initial.minor, request.initial.currency, self.cluster)
        name = new_account_name(request.account, self.cluster)
        account = await self.ledger.open_account(name, request.password, initial)
        return bank_pb2.AccountReply(account=account.name, balance=self._money(account.balance),
                                     held=self._money(0))

    async def OpenAccounts(self, request: bank_pb2.OpenAccountsRequest, context: grpc.aio.ServicerContext) -> bank_pb2.OpenAccountsReply:
        problem = hash_problem(request.password_hash)
        if problem is not None:
            raise InvalidArgument(f"password_hash is {problem}")
        if request.initial.currency and request.initial.currency != self.ledger.currency:
            raise InvalidAmount(f"bank holds {self.ledger.currency}, not {request.initial.currency}")
        initial = request.initial.minor
        if initial > self.ledger.max_balance:
            raise BalanceCeiling(f"an account may hold at most {format_amount(self.ledger.max_balance)} "
                                     f"{self.ledger.currency}")
        names = [new_account_name(n, self.cluster) for n in request.accounts]
        opened = await self.ledger.open_accounts(names, request.password_hash, initial)
        return bank_pb2.OpenAccountsReply(opened=opened)

    async def Deposit(self, request: bank_pb2.BankDepositRequest, context: grpc.aio.ServicerContext) -> bank_pb2.AccountReply:
        amount = validate_positive_amount(request.amount.minor, request.amount.currency, self.ledger.currency)
        name = account_name(request.account)
        balance = await self.ledger.deposit(valid_txn_id(request.txn_id), name, amount)
        return bank_pb2.AccountReply(account=name, balance=self._money(balance),
                                     held=self._money(self.ledger.account(name).held))

    async def VerifyPassword(self, request: bank_pb2.VerifyPasswordRequest, context: grpc.aio.ServicerContext) -> bank_pb2.VerifyPasswordReply:
        if len(request.password) > MAX_PASSWORD:
            return bank_pb2.VerifyPasswordReply(ok=False)
        ok, locked_for = await self.ledger.check_password(account_name(request.account), request.password)
        return bank_pb2.VerifyPasswordReply(ok=ok, locked_for_s=locked_for)

    async def GetAccount(self, request: bank_pb2.AccountRequest, context: grpc.aio.ServicerContext) -> bank_pb2.AccountReply:
        account = self.ledger.account(account_name(request.account))
        return bank_pb2.AccountReply(account=account.name, balance=self._money(account.balance),
                                     held=self._money(account.held))

    async def History(self, request: bank_pb2.BankHistoryRequest, context: grpc.aio.ServicerContext) -> bank_pb2.BankHistoryReply:
        limit = min(request.limit or DEFAULT_HISTORY, MAX_HISTORY)
        name = account_name(request.account)
        account = self.ledger.account(name)
        before = _cursor_row(name, request.before, account.entries) if request.before else 0
        entries, older = await self.ledger.history(name, limit, before)
        return bank_pb2.BankHistoryReply(
            entries=[common_pb2.HistoryEntry(txn_id=e.txn_id, counterparty=e.counterparty, delta_minor=e.delta,
                                             currency=self.ledger.currency, applied_at=e.applied_at)
                     for e in entries],
            next_cursor=_cursor(name, older) if older else "")

    async def Audit(self, request: bank_pb2.AuditRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[bank_pb2.BankAuditChunk]:
        # One reading of the ledger as it stands now, streamed over many awaits while payments go on:
        # the accounts from memory, the settled transactions from the store, AUDIT_CHUNK at a time.
        with self.ledger.audit_view() as view:
            yield bank_pb2.BankAuditChunk(deposits_minor=view.deposits, treasury_minor=view.treasury,
                                          currency=self.ledger.currency)
            for i in range(0, len(view.names), AUDIT_CHUNK):
                yield bank_pb2.BankAuditChunk(accounts=[
                    bank_pb2.AccountState(account=n, balance_minor=b, held_minor=h, opening_minor=o)
                    for n, b, h, o in view.accounts(view.names[i:i + AUDIT_CHUNK])])
            txns = view.txns()
            while chunk := list(itertools.islice(txns, AUDIT_CHUNK)):
                yield bank_pb2.BankAuditChunk(txns=[
                    bank_pb2.BankTxn(txn_id=i, state=st, legs=[
                        bank_pb2.Leg(account=leg.account, delta_minor=leg.delta, counterparty=leg.counterparty)
                        for leg in legs])
                    for i, st, legs in chunk])


def _cursor(account: str, row: int) -> str:
    """The cursor for `account`'s entries older than history row `row`: the row and a tag of the account."""
    return f"{row}.{_tag(account)}"


def _cursor_row(account: str, cursor: str, entries: int) -> int:
    """The row a cursor of _cursor names, checked to be one this account's history could have given."""
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise InvalidArgument(f"bad history cursor {quoted(cursor)}: pass next_cursor from an earlier page as it is")
    row = int(match[1])
    if match[2] != _tag(account) or not 2 <= row <= entries:
        raise InvalidArgument(f"history cursor {quoted(cursor)} is not from a page of {account}'s history")
    return row


def _tag(account: str) -> str:
    return hashlib.blake2s(account.encode(), digest_size=3).hexdigest()


_CURSOR = re.compile(r"([1-9][0-9]{0,11})\.([0-9a-f]{6})")


Answer = TypeVar("Answer")


def _merge(checked: list[Any], answers: list[Answer]) -> list[Answer | MiniupiError]:
    """The ledger's answers put back among the items refused before it saw them."""
    it = iter(answers)
    return [c if isinstance(c, MiniupiError) else next(it) for c in checked]


def _prepare_spec(request: bank_pb2.PrepareRequest) -> tuple[str, str, list[Leg]]:
    if len(request.legs) > MAX_LEGS:
        raise InvalidArgument(f"at most {MAX_LEGS} legs in one prepare")
    legs = [Leg(account_name(leg.account), leg.delta_minor, leg.counterparty[:80]) for leg in request.legs]
    return valid_txn_id(request.txn_id), request.currency, legs


async def open_setup_accounts(ledger: Ledger, path: Path | None, reserved: frozenset[str] = frozenset()) -> int:
    """Open the setup file's accounts once; later starts keep the stored state."""
    if ledger.meta.get("setup_loaded") or path is None:
        return 0
    accounts = read_setup_file(path, ledger.max_balance, reserved)  # all checked before any is opened

    async def open_one(name: str, password: str, balance: int) -> int:
        try:
            await ledger.open_account(name, password, balance)
            return 1
        except AlreadyExists:  # opened before a crash in the middle of the first load
            return 0

    opened = sum(await asyncio.gather(*(open_one(a.name, a.password, a.balance) for a in accounts)))
    await ledger.set_meta("setup_loaded", True)
    return opened


async def run_bank(cluster: ClusterConfig, name: str, port: int | None = None, log_json: bool = False,
                   plugins: Plugins | None = None) -> None:
    """Serve bank `name`; `plugins` is check_plugins(cluster), done here if not given."""
    if name not in cluster.banks:
        raise ConfigError(f"{cluster.path}: no bank named {name!r} (have {', '.join(cluster.banks)})")
    if plugins is None:
        plugins = check_plugins(cluster)  # before the node creates anything
    node = cluster.banks[name]
    if port is not None:
        node = dataclasses.replace(node, port=port)
    setup_node_logging(node, log_json or cluster.log_json)
    commit, tables = await open_store(plugins, node, LIVE_TABLES)
    try:
        tables = await asyncio.to_thread(load_live, commit.store, tables)  # upgrades an older store first
    except StoreDamaged as e:
        await commit.close()
        raise NodeStartError(f"{node.name}: refusing to start: {e}") from None
    ledger = Ledger(node.name, cluster.currency, commit, tables, hooks=NodeHooks(plugins.pm, node),
                    login_attempts=cluster.login_attempts, login_lockout_s=cluster.login_lockout_s,
                    max_balance=cluster.max_balance)
    opened = await open_setup_accounts(ledger, node.accounts, cluster.reserved_user_names)
    if opened:
        logger.info("{} opened {} accounts from {}", node.name, opened, node.accounts)

    servicer = BankServicer(ledger, cluster)

    def add_services(server: grpc.aio.Server) -> list[str]:
        bank_pb2_grpc.add_BankServicer_to_server(servicer, server)
        return [bank_pb2.DESCRIPTOR.services_by_name["Bank"].full_name]

    resolver = asyncio.create_task(resolve_in_doubt(ledger, node))

    async def on_stop() -> None:
        resolver.cancel()
        await asyncio.gather(resolver, return_exceptions=True)
        await commit.close()

    await serve(node, plugins, plugins.auth(node), add_services, on_stop, on_stopping=servicer.end_streams)

