"""A bank's accounts and its side of two-phase commit, with no gRPC in sight.

Memory holds what is live: the accounts (with their holds and credits in
flight), the prepared transactions, and a decided or deposited one only
until the write that settles it is durable. Everything settled is in the
store (bank_store.py gives its layout) and read back by key when needed: a
repeated prepare, decision or deposit of an old id, a page of history, the
audit. Every change goes through the group commit before it is
acknowledged, so a reply always describes durable state. Holds are derived
from prepared debits, and credits in flight from prepared credits, never
stored on their own, so neither can outlive the transaction that placed it.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from loguru import logger

from miniupi.errors import (
    AccountExists,
    AlreadyExists,
    BalanceCeiling,
    FailedPrecondition,
    InvalidAmount,
    InvalidArgument,
    MiniupiError,
    StoreUnavailable,
    UnknownAccount,
    Unavailable,
    unwrap,
)
from miniupi.config import DEFAULT_MAX_BALANCE
from miniupi.money import INT64_MAX, format_amount
from miniupi.contract.manager import NO_HOOKS, NodeHooks, fire_after
from miniupi.nodes.passwords import hash_password, needs_rehash, verify_password
from miniupi.contract.identity import TREASURY  # the counterparty a deposit shows in the account's history
from miniupi.contract.store import Put
from miniupi.nodes.bank_store import FORMAT, history_key, history_row
from miniupi.nodes.group_commit import GroupCommit
from miniupi.nodes.overlay import overlay
from miniupi.nodes.participants import YES, Leg, Refusal, Vote
from miniupi.states import TxnState

BULK_CHUNK = 5000
HISTORY_READS_PER_TURN = 100  # a page of history gives the event loop a turn after this many reads
# Names without an account whose failed logins are remembered (in memory), least recently guessed
# dropped first. Each entry costs a guesser one full password hash, so pushing a name out takes
# most of an hour of a two-core bank: far longer than the default lock.
MAX_STRANGERS = 100_000


@dataclass(slots=True)
class Account:
    name: str
    balance: int
    password_hash: str
    opened_at: float
    opening: int
    failed_logins: int = 0
    locked_until: float = 0.0
    held: int = 0
    incoming: int = 0  # credits of prepared transactions: the balance may still grow by this much
    entries: int = 0  # history rows numbered so far; the newest is history_key(name, entries)

    def record(self) -> dict[str, Any]:
        return {"balance": self.balance, "password_hash": self.password_hash, "opened_at": self.opened_at,
                "opening": self.opening, "failed_logins": self.failed_logins, "locked_until": self.locked_until,
                "entries": self.entries}

    @classmethod
    def from_record(cls, name: str, r: dict[str, Any]) -> Account:
        return cls(name, r["balance"], r["password_hash"], r["opened_at"], r["opening"], r.get("failed_logins", 0),
                   r.get("locked_until", 0.0), entries=r.get("entries", 0))


@dataclass(slots=True)
class _Stranger:
    """Failed logins at a name with no account, counted like an account's so locking reveals nothing."""

    failed_logins: int = 0
    locked_until: float = 0.0


@dataclass(slots=True)
class BankTxn:
    txn_id: str
    state: TxnState
    legs: tuple[Leg, ...]
    prepared_at: float
    decided_at: float | None = None
    balance: int | None = None  # a deposit's answer: the balance it left

    def record(self) -> dict[str, Any]:
        record = {
            "state": self.state,
            "legs": [[leg.account, leg.delta, leg.counterparty] for leg in self.legs],
            "prepared_at": self.prepared_at,
            "decided_at": self.decided_at,
        }
        if self.balance is not None:
            record["balance"] = self.balance
        return record

    @classmethod
    def from_record(cls, txn_id: str, r: dict[str, Any]) -> BankTxn:
        return cls(txn_id, TxnState(r["state"]), tuple(Leg(*leg) for leg in r["legs"]), r["prepared_at"],
                   r["decided_at"], r.get("balance"))


class Entry(NamedTuple):
    """One applied leg in an account's history: row `n` of its history table."""

    n: int
    txn_id: str
    counterparty: str
    delta: int
    applied_at: float


PrepareSpec = tuple[str, str, Sequence[Leg]]  # txn_id, currency, legs


class Ledger:
    """Accounts, holds and prepared transactions of one bank; settled transactions in its store.

    `tables` are the live tables as bank_store.load_live gives them: the
    accounts, the meta, and in `txns` the in-doubt records.
    """

    def __init__(
        self,
        bank: str,
        currency: str,
        commit: GroupCommit,
        tables: dict[str, dict[str, Any]],
        hooks: NodeHooks = NO_HOOKS,
        login_attempts: int = 5,
        login_lockout_s: float = 300.0,
        max_balance: int = DEFAULT_MAX_BALANCE,
    ) -> None:
        self.bank, self.currency, self._commit, self._hooks = bank, currency, commit, hooks
        self.max_balance = max_balance
        self.login_attempts, self.login_lockout_s = login_attempts, login_lockout_s
        self.meta: dict[str, Any] = dict(tables.get("meta", {}))
        self.accounts: dict[str, Account] = {
            name: Account.from_record(name, r) for name, r in tables.get("accounts", {}).items()
        }
        if self.meta.get("format") != FORMAT and self.accounts:
            raise ValueError(f"bank {bank}: the store is not in format {FORMAT}; open it with bank_store.load_live")
        # The live transactions: every prepared one, and a decided or deposited one until the write
        # that settles it is durable (its repeats are answered from here meanwhile, then from the store).
        self.txns: dict[str, BankTxn] = {}
        self.prepared: set[str] = set()  # voted YES, decision not yet known
        self._views: set[AuditView] = set()  # audits streaming now, each as the ledger stood when it began
        for txn_id, r in tables.get("txns", {}).items():
            if r["state"] == TxnState.PREPARED:
                txn = BankTxn.from_record(txn_id, r)
                self.txns[txn_id] = txn
                self.prepared.add(txn_id)
                self._hold(txn, +1)
        self._opening: set[str] = set()
        self._strangers: OrderedDict[str, _Stranger] = OrderedDict()

    # -- accounts -------------------------------------------------------

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise UnknownAccount(f"unknown account {name}@{self.bank}") from None

    async def open_account(self, name: str, password: str, initial: int) -> Account:
        if initial < 0:
            raise InvalidAmount("initial deposit must not be negative")
        if not password:
            raise InvalidArgument("password must not be empty")
        if name in self.accounts or name in self._opening:
            raise AccountExists(f"account {name}@{self.bank} already exists")
        self._opening.add(name)
        try:
            password_hash = await asyncio.to_thread(hash_password, password)
        finally:
            self._opening.discard(name)
        if name in self.accounts:
            raise AccountExists(f"account {name}@{self.bank} already exists")
        account = Account(name, initial, password_hash, time.time(), initial)
        await self._add_accounts([account])
        return account

    async def open_accounts(self, names: Sequence[str], password_hash: str, initial: int) -> int:
        """The bulk path: many accounts sharing one password hash; existing names are skipped."""
        if initial < 0:
            raise InvalidAmount("initial deposit must not be negative")
        now = time.time()
        fresh = [Account(n, initial, password_hash, now, initial)
                 for n in dict.fromkeys(names) if n not in self.accounts and n not in self._opening]
        for i in range(0, len(fresh), BULK_CHUNK):
            await self._add_accounts(fresh[i:i + BULK_CHUNK])
        return len(fresh)

    async def _add_accounts(self, accounts: Sequence[Account]) -> None:
        # Memory first, so concurrent openings add up their deposits instead of overwriting them.
        deposits = self.meta.get("deposits", 0) + sum(a.opening for a in accounts)
        if deposits > INT64_MAX:
            raise BalanceCeiling(f"bank {self.bank} cannot hold that much money")
        for account in accounts:
            self.accounts[account.name] = account
        self.meta["deposits"] = deposits
        puts = [Put("accounts", a.name, a.record()) for a in accounts]
        if self.meta.get("format") != FORMAT:  # a new store: its layout goes with its first accounts
            puts.append(Put("meta", "format", FORMAT))
        try:
            await self._commit.write([*puts, Put("meta", "deposits", deposits)])
        except Exception:
            for account in accounts:
                del self.accounts[account.name]
            self.meta["deposits"] -= sum(a.opening for a in accounts)
            raise
        self.meta["format"] = FORMAT

    async def deposit(self, txn_id: str, name: str, amount: int) -> int:
        """Credit `amount` of new money to `name` once per txn_id, durably, and count it as issued.

        Returns the balance the deposit left. A repeat with the same account
        and amount gets that same answer and credits nothing; an id used for
        anything else is refused. The ceiling counts credits still in flight,
        as a prepare does, so together they never take a balance past it.
        """
        if amount <= 0:
            raise InvalidAmount("amount must be positive")
        known = self.find_txn(txn_id)
        if known is not None:
            if known.state != TxnState.DEPOSITED or known.legs != (Leg(name, amount, TREASURY),):
                raise AlreadyExists(f"transaction {txn_id} is already used at {self.bank} for something else")
            if self.txns.get(txn_id) is known:  # its first write may still be under way
                await self._commit.barrier()  # the first answer only once the first write is durable
                known = self.find_txn(txn_id)
                if known is None or known.state != TxnState.DEPOSITED:
                    raise StoreUnavailable(f"bank {self.bank} could not make deposit {txn_id} durable; "
                                           f"send it again")
            assert known.balance is not None  # every deposit record holds its answer
            return known.balance
        account = self.account(name)
        room = self._room(account)
        if amount > room:
            raise BalanceCeiling(f"account {name}@{self.bank} may hold at most {format_amount(self.max_balance)} "
                                     f"{self.currency}; it has room for {format_amount(max(room, 0))} more")
        deposits, treasury = self.meta.get("deposits", 0) + amount, self.meta.get("treasury", 0) + amount
        if deposits > INT64_MAX:
            raise BalanceCeiling(f"bank {self.bank} cannot hold that much money")
        now = time.time()
        txn = BankTxn(txn_id, TxnState.DEPOSITED, (Leg(name, amount, TREASURY),), now, now,
                      balance=account.balance + amount)
        # Memory first, as for a payment, so a repeat arriving during the write finds the id taken.
        self._new_txn(txn)
        self._changing(account)
        account.balance += amount
        n = account.entries = account.entries + 1
        self.meta["deposits"], self.meta["treasury"] = deposits, treasury
        try:
            await self._commit.write([Put("txns", txn_id, txn.record()),
                                      Put("accounts", name, account.record()),
                                      Put("history", history_key(name, n), history_row(txn_id, TREASURY, amount, now)),
                                      Put("meta", "deposits", deposits), Put("meta", "treasury", treasury)])
        except Exception:
            del self.txns[txn_id]
            account.balance -= amount
            self._unnumber(account, n)
            self.meta["deposits"] -= amount
            self.meta["treasury"] -= amount
            raise
        self._settled(txn)
        return txn.balance

    async def check_password(self, name: str, password: str) -> tuple[bool, float]:
        """(password right, seconds the account stays locked). A locked account is not checked.

        Each check is reserved before the slow hash runs, so however many
        logins arrive at once, at most `login_attempts` are checked per
        lockout window: the reservation that fills the count locks the
        account, and a right password among the reserved ones unlocks it.
        A failure is made durable before it is answered (the write runs
        alongside the hash), so a restart resets no lock; a check the bank
        died during was never answered, so it told the guesser nothing.
        Names with no account count and lock alike, in memory.
        """
        account = self.accounts.get(name)
        who = account if account is not None else self._stranger(name)
        locked_for = self._reserve_attempt(who)
        if locked_for:
            return False, locked_for
        try:
            self._hooks.miniupi_before_password_check(account=name)
        except Exception as e:  # a plugin's failure is the bank's, not the caller's: no UNKNOWN, no check
            logger.exception("bank {}: before_password_check failed for {}", self.bank, name)
            raise Unavailable(f"bank {self.bank} could not check the password: {e!r}") from None
        if account is None:
            # Spend the same time as a real check, so timing does not tell which accounts exist.
            await asyncio.to_thread(verify_password, _dummy_hash(), password)
            return False, self._locked_for(who)
        right, _ = await asyncio.gather(asyncio.to_thread(verify_password, account.password_hash, password),
                                        self._commit.write([Put("accounts", name, account.record())]))
        if not right:
            return False, self._locked_for(account)
        account.failed_logins, account.locked_until = 0, 0.0
        if needs_rehash(account.password_hash):
            account.password_hash = await asyncio.to_thread(hash_password, password)
        await self._commit.write([Put("accounts", name, account.record())])
        return True, 0.0

    def _reserve_attempt(self, who: Account | _Stranger) -> float:
        """Seconds `who` stays locked, or 0.0 having counted one more attempt (locking on the last allowed)."""
        now = time.time()
        if who.locked_until > now:
            return who.locked_until - now
        who.failed_logins += 1  # counted now, before any await: concurrent logins see it
        if who.failed_logins >= self.login_attempts:
            who.failed_logins, who.locked_until = 0, now + self.login_lockout_s
        return 0.0

    @staticmethod
    def _locked_for(who: Account | _Stranger) -> float:
        return max(0.0, who.locked_until - time.time())

    def _stranger(self, name: str) -> _Stranger:
        """The failed-login record of a name with no account, most recently guessed last."""
        stranger = self._strangers.pop(name, None) or _Stranger()
        self._strangers[name] = stranger
        while len(self._strangers) > MAX_STRANGERS:
            self._strangers.popitem(last=False)
        return stranger

    async def history(self, name: str, limit: int, before: int = 0) -> tuple[list[Entry], int]:
        """Up to `limit` of `name`'s entries older than row `before` (0: the newest), newest first,
        and the row to ask before for the next page (0: there is none).

        Point reads of the history index, walking down from `before`: the
        cost follows `limit`, not how many entries the account has. A row
        numbered and not (or never) written, a payment whose write is still
        under way or failed, is passed over.
        """
        account = self.account(name)
        n = (before or account.entries + 1) - 1
        entries: list[Entry] = []
        while n >= 1 and len(entries) < limit:
            row = self._read("history", history_key(name, n))
            if row is not None:
                entries.append(Entry(n, *row))
            n -= 1
            if n % HISTORY_READS_PER_TURN == 0:
                await asyncio.sleep(0)  # a long page lets the payments go on meanwhile
        return entries, (n + 1 if n >= 1 else 0)

    async def set_meta(self, key: str, value: Any) -> None:
        await self._commit.write([Put("meta", key, value)])
        self.meta[key] = value

    # -- two-phase commit -----------------------------------------------

    async def prepare(self, txn_id: str, currency: str, legs: Sequence[Leg]) -> Vote:
        """Reserve every leg and vote. YES is durable before it is returned."""
        return unwrap((await self.prepare_many([(txn_id, currency, legs)]))[0])

    async def prepare_many(self, prepares: Sequence[PrepareSpec]) -> list[Vote | MiniupiError]:
        """Vote on a batch with one durable write: a Vote, or the error that refused that item."""
        return (await self.decide_and_prepare((), prepares))[1]

    async def decide_and_prepare(
        self, decisions: Sequence[tuple[str, bool]], prepares: Sequence[PrepareSpec],
    ) -> tuple[list[bool | MiniupiError], list[Vote | MiniupiError]]:
        """Apply a batch of (txn_id, commit), then vote on a batch of prepares, with one durable write.

        Each answer is its own: a decision's is whether the id was known, a
        prepare's is its Vote, or either is the error that refused that item
        alone. A repeated id gets its first answer, durable too, because the
        batch's write comes after everything written before. If the write
        fails, every change the batch made in memory is undone and every
        answer is that failure, so memory never runs ahead of the disk.
        """
        batch = _Batch()
        outcomes = [self._item(self._apply, batch, txn_id, commit) for txn_id, commit in decisions]
        votes = [self._item(self._reserve, batch, txn_id, currency, legs) for txn_id, currency, legs in prepares]
        for txn in batch.voted:
            batch.puts += [Put("txns", txn.txn_id, txn.record()), Put("in_doubt", txn.txn_id, 1)]
        try:
            await self._commit.write(batch.puts)
        except Exception as e:
            for undo in reversed(batch.undo):
                undo()
            failed = StoreUnavailable(f"bank {self.bank} could not make the batch durable: {e}")
            return [failed] * len(outcomes), [failed] * len(votes)
        for txn in batch.settled:
            self._settled(txn)
        for txn in batch.applied:
            fire_after(self._hooks.miniupi_after_apply, txn_id=txn.txn_id, decision=txn.state)
        for txn in batch.voted:
            fire_after(self._hooks.miniupi_after_vote, txn_id=txn.txn_id, yes=True)
        return outcomes, votes

    def _item(self, step: Callable[..., Answer], batch: _Batch, txn_id: str, *args: Any) -> Answer | MiniupiError:
        """One item of a batch, answered alone: a refusal or a failing plugin hook leaves the rest alone.

        Hooks fire before an item changes anything, so an item whose hook
        raised has nothing to undo.
        """
        try:
            return step(batch, txn_id, *args)
        except MiniupiError as e:
            return e
        except Exception as e:
            logger.exception("bank {}: {} failed for {}", self.bank, step.__name__.strip("_"), txn_id)
            return Unavailable(f"bank {self.bank} could not take {txn_id}: {e!r}")

    def _reserve(self, batch: _Batch, txn_id: str, currency: str, legs: Sequence[Leg]) -> Vote:
        if not legs:
            raise InvalidArgument("a prepare needs at least one leg")
        known = self.find_txn(txn_id)
        if known is not None:
            if known.state == TxnState.PREPARED and known.legs == tuple(legs):
                return YES
            if known.state == TxnState.PREPARED:
                return Vote(False, Refusal.ALREADY_DECIDED,
                            f"transaction {txn_id} is prepared here with other legs")
            return Vote(False, Refusal.ALREADY_DECIDED, f"transaction {txn_id} is already {known.state.lower()}")
        vote = self._check(currency, legs)
        self._hooks.miniupi_before_vote(txn_id=txn_id, yes=vote.yes)
        if not vote.yes:
            return vote
        txn = BankTxn(txn_id, TxnState.PREPARED, tuple(legs), time.time())
        self._hold(txn, +1)
        self._new_txn(txn)
        self.prepared.add(txn_id)
        batch.voted.append(txn)
        batch.undo.append(lambda: self._unreserve(txn))
        return vote

    def _unreserve(self, txn: BankTxn) -> None:
        self._hold(txn, -1)
        del self.txns[txn.txn_id]
        self.prepared.discard(txn.txn_id)

    def _check(self, currency: str, legs: Sequence[Leg]) -> Vote:
        if currency != self.currency:
            return Vote(False, Refusal.WRONG_CURRENCY, f"bank {self.bank} holds {self.currency}, not {currency}")
        for leg in legs:
            account = self.accounts.get(leg.account)
            if account is None:
                return Vote(False, Refusal.UNKNOWN_ACCOUNT, f"unknown account {leg.account}@{self.bank}")
            if leg.delta == 0:
                raise InvalidArgument("a leg must move a non-zero amount")
        debits: dict[str, int] = {}
        credits: dict[str, int] = {}
        for leg in legs:
            side = debits if leg.delta < 0 else credits
            side[leg.account] = side.get(leg.account, 0) + abs(leg.delta)
        for name, amount in debits.items():
            account = self.accounts[name]
            if account.balance - account.held < amount:
                return Vote(False, Refusal.INSUFFICIENT_FUNDS, "insufficient funds")
        for name, amount in credits.items():
            if amount > self._room(self.accounts[name]):
                return Vote(False, Refusal.BALANCE_CEILING, f"account {name}@{self.bank} would exceed its "
                            f"ceiling of {format_amount(self.max_balance)} {self.currency}")
        return YES

    def _room(self, account: Account) -> int:
        """How much more `account` may receive: credits in flight count, since each alone may fit
        while together they would not."""
        return self.max_balance - account.balance - account.incoming

    def _hold(self, txn: BankTxn, sign: int) -> None:
        """Place (+1) or release (-1) what a prepared transaction reserves: debits held, credits incoming."""
        for leg in txn.legs:
            account = self.accounts[leg.account]
            self._changing(account)
            if leg.delta < 0:
                account.held += sign * -leg.delta
            else:
                account.incoming += sign * leg.delta

    async def commit(self, txn_id: str) -> bool:
        """Apply a prepared transaction once; a repeat is a no-op."""
        return unwrap((await self.decide_many([(txn_id, True)]))[0])

    async def abort(self, txn_id: str) -> bool:
        """Release a prepared transaction; an unknown id is remembered as aborted (returns False)."""
        return unwrap((await self.decide_many([(txn_id, False)]))[0])

    async def decide_many(self, decisions: Sequence[tuple[str, bool]]) -> list[bool | MiniupiError]:
        """Apply a batch of (txn_id, commit) with one durable write; see decide_and_prepare."""
        return (await self.decide_and_prepare(decisions, ()))[0]

    def _apply(self, batch: _Batch, txn_id: str, commit: bool) -> bool:
        txn = self.find_txn(txn_id)
        decision = TxnState.COMMITTED if commit else TxnState.ABORTED
        if txn is None:
            if commit:
                raise FailedPrecondition(f"transaction {txn_id} was never prepared at {self.bank}")
            txn = BankTxn(txn_id, TxnState.ABORTED, (), time.time(), time.time())
            self._new_txn(txn)
            batch.puts.append(Put("txns", txn_id, txn.record()))
            batch.settled.append(txn)
            batch.undo.append(lambda: self.txns.pop(txn_id, None))
            return False
        if txn.state == decision:
            return True  # a repeat: the batch's write is its barrier
        if txn.state == TxnState.DEPOSITED:
            if commit:
                raise FailedPrecondition(f"transaction {txn_id} is a deposit at {self.bank}, not a payment")
            return False  # a payment that reused a deposit's id was never prepared here: nothing to release
        if txn.state != TxnState.PREPARED:
            raise FailedPrecondition(f"transaction {txn_id} was {txn.state.lower()} at {self.bank}")
        self._hooks.miniupi_before_apply(txn_id=txn_id, decision=decision)
        self._hold(txn, -1)
        self.prepared.discard(txn_id)
        txn.state, txn.decided_at = decision, time.time()
        batch.puts += [Put("txns", txn_id, txn.record()), Put("in_doubt", txn_id, None)]
        numbered: list[int] = []  # each leg's history row, when committed
        if commit:
            touched: dict[str, Account] = {}
            for leg in txn.legs:
                account = self.accounts[leg.account]
                self._changing(account)
                account.balance += leg.delta
                account.entries += 1
                numbered.append(account.entries)
                batch.puts.append(Put("history", history_key(account.name, account.entries),
                                      history_row(txn_id, leg.counterparty, leg.delta, txn.decided_at)))
                touched[account.name] = account
            batch.puts.extend(Put("accounts", a.name, a.record()) for a in touched.values())
        batch.applied.append(txn)
        batch.settled.append(txn)
        batch.undo.append(lambda: self._unapply(txn, numbered))
        return True

    def _unapply(self, txn: BankTxn, numbered: list[int]) -> None:
        """Back to PREPARED, holds and all."""
        if txn.state == TxnState.COMMITTED:
            for leg, n in zip(reversed(txn.legs), reversed(numbered)):
                account = self.accounts[leg.account]
                account.balance -= leg.delta
                self._unnumber(account, n)
        txn.state, txn.decided_at = TxnState.PREPARED, None
        self._hold(txn, +1)
        self.prepared.add(txn.txn_id)

    @staticmethod
    def _unnumber(account: Account, n: int) -> None:
        """Give back history row `n` of a write that failed, if no later change has numbered a row since.

        Otherwise the row stays a gap, which reads pass over: numbering it
        again could overwrite the later change's row once that is written.
        """
        if account.entries == n:
            account.entries -= 1

    # -- the live transactions and the store ------------------------------

    def find_txn(self, txn_id: str) -> BankTxn | None:
        """The transaction: live in memory, else settled in the store (one index lookup), else None."""
        txn = self.txns.get(txn_id)
        if txn is None:
            record = self._read("txns", txn_id)
            if record is not None:
                txn = BankTxn.from_record(txn_id, record)
                if txn.state == TxnState.PREPARED:
                    self._adopt(txn)
        return txn

    def _adopt(self, txn: BankTxn) -> None:
        """Make live, hold and all, a prepared transaction the store holds and memory does not.

        Its prepare's write reached the disk but was reported failed (the
        connection to the store dropped after COMMIT), so memory undid it.
        A restart would load it prepared; so does this, or its decision
        would release a hold memory never placed.
        """
        logger.warning("bank {}: {} is prepared in the store though its write was reported failed; "
                       "holding it again", self.bank, txn.txn_id)
        self._hold(txn, +1)
        self._new_txn(txn)
        self.prepared.add(txn.txn_id)

    def _read(self, table: str, key: str) -> Any | None:
        try:
            return self._commit.store.get(table, key)
        except Exception as e:
            logger.error("bank {}: reading {}/{} from the store failed: {!r}", self.bank, table, key, e)
            raise StoreUnavailable(f"bank {self.bank} could not read its store: {e}") from None

    def _new_txn(self, txn: BankTxn) -> None:
        """Make `txn`, an id this bank has not seen, live."""
        self.txns[txn.txn_id] = txn
        for view in self._views:
            view.new.add(txn.txn_id)

    def _settled(self, txn: BankTxn) -> None:
        """`txn`'s decision or deposit is durable: from now on the store answers for it."""
        if txn.state != TxnState.PREPARED and self.txns.get(txn.txn_id) is txn:
            del self.txns[txn.txn_id]

    def _changing(self, account: Account) -> None:
        """`account`'s balance or holds are about to change: every audit streaming keeps them as they were."""
        for view in self._views:
            if account.name not in view.before:
                view.before[account.name] = (account.balance, account.held, account.opening)

    @contextlib.contextmanager
    def audit_view(self) -> Iterator[AuditView]:
        """The ledger as it stands now, to stream over many awaits while payments go on."""
        view = AuditView(self)
        self._views.add(view)
        try:
            yield view
        finally:
            self._views.discard(view)


class AuditView:
    """One reading of a ledger as it stood at one moment, streamed in bounded memory.

    Taken at once: the counters, the account names and the live
    transactions (few). Then, while it streams, the ledger keeps here the
    accounts as they were before each first change, and the ids of
    transactions new since; the settled transactions come from the store,
    less those. So the accounts and the transactions agree, as the audit
    needs, however long the stream takes, and memory follows the accounts
    and what changes meanwhile, never the whole history.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.deposits: int = ledger.meta.get("deposits", 0)
        self.treasury: int = ledger.meta.get("treasury", 0)
        self.names = list(ledger.accounts)
        self.before: dict[str, tuple[int, int, int]] = {}  # name -> (balance, held, opening) when the view began
        self.live = {t.txn_id: (t.state, t.legs) for t in ledger.txns.values()}
        self.new: set[str] = set()  # ids first seen since the view began

    def accounts(self, names: Sequence[str]) -> list[tuple[str, int, int, int]]:
        """(name, balance, held, opening) of each, as when the view began."""
        out = []
        for name in names:
            values = self.before.get(name)
            if values is None:
                a = self._ledger.accounts[name]
                values = (a.balance, a.held, a.opening)
            out.append((name, *values))
        return out

    def txns(self) -> Iterator[tuple[str, str, tuple[Leg, ...]]]:
        """(id, state, legs) of every transaction, as when the view began, in id order (so the audit
        can join it by id): the store's, less the ids new since, with the live ones over them."""
        rows = ((txn_id, r) for txn_id, r in self._ledger._commit.store.scan("txns") if txn_id not in self.new)
        settled = overlay(rows, self.live, lambda _, r: (r["state"], tuple(Leg(*leg) for leg in r["legs"])),
                          self.live.get)
        for txn_id, (state, legs) in settled:
            yield txn_id, state, legs


@dataclass
class _Batch:
    """What one decide_and_prepare has done in memory: to write, to report, and to undo if the write fails."""

    puts: list[Put] = field(default_factory=list)
    undo: list[Callable[[], object]] = field(default_factory=list)
    applied: list[BankTxn] = field(default_factory=list)
    voted: list[BankTxn] = field(default_factory=list)
    settled: list[BankTxn] = field(default_factory=list)  # decided here: the store answers for them once written


Answer = TypeVar("Answer")


@functools.cache
def _dummy_hash() -> str:
    return hash_password("miniupi-no-such-account")
