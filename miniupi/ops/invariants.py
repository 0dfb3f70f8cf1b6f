"""The invariants of DESIGN.md section 2, judged one transaction id at a time.

`Checker` is told, for each id in increasing order, what the gateway and
every bank hold under it (the join of miniupi/ops/join.py), and keeps only
aggregates: per account its committed payments and prepared holds, per
pair of banks the settlement reckoned three ways (the gateway's committed
payments, the payer's bank's debits, the payee's bank's credits), per
payer and calendar day under a daily limit the sum sent, and per refund
its details (its original may come anywhere in the run of ids). So its
memory follows the accounts, the bank pairs, the (payer, day) pairs and
the refunds, never the number of payments; a violation message names at
most a few ids, and each kind of message is kept to MAX_LINES.

Money enters only as issued money the banks count: opening balances (setup
files, capped opening deposits, bulk openings) and treasury deposits, which
a bank records as DEPOSITED transactions of their own. The sum of every
balance must equal what was issued.

The gateway's own rules are checked over its transactions and collect
requests: refunds never exceed their original and go back the way it
came; a request is paid exactly once, as asked; no payer sent more than
the daily limit in a calendar day.

The audit reads every bank before the gateway (each bank's reading is one
moment of its ledger, taken when its stream opens), so the gateway's
record of an id is never older than a bank's: a bank's commit the gateway
has not decided is a violation as soon as it is seen. What a reading
cannot tell apart from a payment still moving (prepared at a bank,
undecided or unacknowledged at the gateway, committed at the gateway and
not yet at a bank) is "in doubt": `settled=False` lists it so that the
audit reads again, `settled=True` (every node up, nothing moving) makes it
a violation.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from miniupi.config import ClusterConfig
from miniupi.nodes.settlement import Flow, Settlement, Settler
from miniupi.states import TxnState

MAX_LINES = 1000  # messages kept of one kind; the rest are counted in one more line
Legs = Sequence[tuple[str, int, str]]  # (account at this bank, delta, counterparty as user@bank or "treasury")
Pair = tuple[str, str]  # (payer's bank, payee's bank)


@dataclass
class BankView:
    name: str
    deposits: int = 0  # every minor unit ever issued at this bank
    treasury: int = 0  # the part of it that treasury deposits brought
    accounts: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (balance, held, opening)
    # id -> (state, [(account, delta, counterparty)]): the account is the user part at this bank, the
    # counterparty the other side as user@bank ("treasury" for a deposit). Empty when the transactions
    # are streamed to a Checker instead of held here.
    txns: dict[str, tuple[str, Legs]] = field(default_factory=dict)


@dataclass(frozen=True)
class GatewayTxnView:
    payer: str
    payee: str
    amount: int
    state: str
    acked: bool
    refund_of: str = ""  # a refund: the payment it gives back
    request_id: str = ""  # the payment of a collect request: that request's id
    created_at: float = 0.0  # Unix seconds; its calendar day is the one the daily limit counts it on
    decided_at: float = 0.0  # 0 while undecided; settlement windows go by it


@dataclass(frozen=True)
class RequestView:
    payer: str  # asked to pay
    payee: str  # asked, and is paid
    amount: int
    state: str  # PENDING, PAYING, PAID, FAILED, DECLINED or EXPIRED, as the gateway derived it


class GatewayView(dict[str, GatewayTxnView]):
    """The gateway's reading: its transactions by id, and its collect requests by id in `requests`."""

    def __init__(self, txns: Mapping[str, GatewayTxnView] | Iterable[tuple[str, GatewayTxnView]] = (),
                 requests: Mapping[str, RequestView] | None = None) -> None:
        super().__init__(txns)
        self.requests: dict[str, RequestView] = dict(requests or {})


@dataclass
class AuditReport:
    banks: int = 0
    accounts: int = 0
    total: int = 0
    issued: int = 0
    issued_by_treasury: int = 0
    deposits: int = 0  # treasury deposit transactions
    committed: int = 0
    aborted: int = 0
    refunds: int = 0  # committed refunds
    requests: int = 0  # collect requests, whatever their state
    # Every committed payment, all time, as the gateway's settlement reckons it; the banks' ledgers agree
    # unless a violation says otherwise.
    settlement: Settlement = field(default_factory=lambda: Settlement(0.0, 0.0))
    in_doubt: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, object]:
        def flows(items: list[Flow]) -> list[dict[str, object]]:
            return [{"from_bank": f.from_bank, "to_bank": f.to_bank, "amount_minor": f.amount,
                     "payments": f.payments} for f in items]

        return {"ok": self.ok, "banks": self.banks, "accounts": self.accounts, "total_minor": self.total,
                "issued_minor": self.issued, "issued_at_opening_minor": self.issued - self.issued_by_treasury,
                "issued_by_treasury_minor": self.issued_by_treasury, "deposits": self.deposits,
                "committed": self.committed, "aborted": self.aborted, "in_doubt": len(self.in_doubt),
                "refunds": self.refunds, "requests": self.requests,
                "settlement": {"gross": flows(self.settlement.gross), "net_minor": self.settlement.net,
                               "intra_bank": flows(self.settlement.intra_bank)},
                "violations": self.violations}


class _Ids:
    """The first few ids of a set seen in increasing order, and how many there are: `_ids` of old."""

    __slots__ = ("first", "count")
    MOST = 5

    def __init__(self) -> None:
        self.first: list[str] = []
        self.count = 0

    def add(self, txn_id: str) -> None:
        self.count += 1
        if len(self.first) < self.MOST:
            self.first.append(txn_id)

    def __str__(self) -> str:
        more = f" and {self.count - self.MOST} more" if self.count > self.MOST else ""
        return ", ".join(self.first) + more


def _ids(ids: Iterable[str]) -> str:
    """Ids for a message: the first few, sorted, and how many more."""
    few = _Ids()
    for txn_id in sorted(ids):
        few.add(txn_id)
    return str(few)


class _Lines:
    """Messages of one kind, in the order of their keys (ids), at most MAX_LINES of them kept."""

    def __init__(self, what: str = "violations") -> None:
        self.what = what
        self._lines: list[tuple[str, str]] = []
        self.dropped = 0

    def add(self, line: str, key: str = "") -> None:
        if len(self._lines) < MAX_LINES:
            self._lines.append((key, line))
        else:
            self.dropped += 1

    def __bool__(self) -> bool:
        return bool(self._lines)

    def lines(self) -> list[str]:
        out = [line for _, line in sorted(self._lines, key=lambda kl: kl[0])]
        if self.dropped:
            out.append(f"and {self.dropped} more {self.what} like these")
        return out


def _in(amount: int, payments: int) -> str:
    return f"{amount} in {payments} payment{'' if payments == 1 else 's'}"


def _bank_of(account: str) -> str:
    return account.rpartition("@")[2]


@dataclass
class _BankSums:
    """What a bank's transactions add up to, per account and in all."""

    committed: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # committed and deposited deltas
    holds: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # prepared debits
    deposited: int = 0
    lines: _Lines = field(default_factory=_Lines)
    doubt: _Lines = field(default_factory=lambda: _Lines("in doubt"))


class Checker:
    """Every invariant over one reading of the cluster, told one id at a time in increasing order.

    `banks` are the banks' counters and accounts (their `txns` are not
    read). Feed every id with `observe`, resolve what `lookups` names (the
    originals of refunds and the requests of payments that came before
    them in the run, read again by id), then `finish`. The collect requests
    are judged when `requests` is true, the daily limit when `cluster` is
    given, as it holds the limits and the time zone of their days.
    """

    def __init__(self, banks: Sequence[BankView], settled: bool = True, cluster: ClusterConfig | None = None,
                 requests: bool = False) -> None:
        self.banks = {b.name: b for b in banks}
        self.settled, self.cluster, self.judge_requests = settled, cluster, requests
        self.r = AuditReport(banks=len(banks))
        self._sums = {b.name: _BankSums() for b in banks}
        self._gateway_lines, self._gateway_doubt = _Lines(), _Lines("in doubt")
        self._settler = Settler()
        # The banks' ledgers by pair: [amount, payments] debited by the payer's bank, credited by the
        # payee's; and per pair the ids on which the three reckonings differ.
        self._debited: dict[Pair, list[int]] = defaultdict(lambda: [0, 0])
        self._credited: dict[Pair, list[int]] = defaultdict(lambda: [0, 0])
        self._differ: dict[Pair, _Ids] = defaultdict(_Ids)
        self._nameless = _Lines()
        self._refunds: list[tuple[str, GatewayTxnView]] = []  # every refund, in id order
        self._originals: dict[str, GatewayTxnView | None] = {}  # the refunded payments, as far as known
        self._wanted: set[str] = set()  # originals later in the run than a refund of theirs
        self._look_txns: set[str] = set()  # originals earlier in the run than a refund of theirs
        self._paying, self._asked = _Lines(), _Lines()  # payments of requests; requests
        self._request_doubt = _Lines("in doubt")
        self._elsewhere: list[tuple[str, GatewayTxnView]] = []  # payments of a request under another id
        self._requests_seen: dict[str, RequestView | None] = {}  # requests such a payment names, as far as known
        self._wanted_requests: set[str] = set()
        self._look_requests: set[str] = set()
        self._sent: dict[tuple[str, str], list] = {}  # (payer, day) -> [sum, _Ids], payers under a limit
        self._last = ""

    # -- one id ---------------------------------------------------------------------------------------

    def observe(self, txn_id: str, g: GatewayTxnView | None, q: RequestView | None,
                at_banks: Mapping[str, tuple[str, Legs]]) -> None:
        """What the gateway (`g`), its collect requests (`q`) and each bank hold under `txn_id`."""
        if txn_id <= self._last:
            raise ValueError(f"ids must increase: {txn_id} after {self._last}")
        self._last = txn_id
        for bank, (state, legs) in at_banks.items():
            self._bank_txn(txn_id, bank, state, legs, g)
        if g is not None:
            self._gateway_txn(txn_id, g, at_banks)
        self._ledger_flows(txn_id, g, at_banks)
        if txn_id in self._wanted:
            self._wanted.discard(txn_id)
            self._originals[txn_id] = g
        if g is not None and g.refund_of:
            self._refund(txn_id, g)
        if self.judge_requests:
            self._request(txn_id, g, q)
        if self.cluster is not None and g is not None:
            self._daily(txn_id, g, self.cluster)

    def _bank_txn(self, txn_id: str, bank: str, state: str, legs: Legs, g: GatewayTxnView | None) -> None:
        sums = self._sums[bank]
        for account, delta, _ in legs:
            if state in (TxnState.COMMITTED, TxnState.DEPOSITED):
                sums.committed[account] += delta
            elif state == TxnState.PREPARED and delta < 0:
                sums.holds[account] -= delta
        if state == TxnState.DEPOSITED:
            self.r.deposits += 1
            sums.deposited += sum(delta for _, delta, _ in legs)
        if state == TxnState.PREPARED:
            sums.doubt.add(f"{txn_id} prepared at {bank}")
        if state == TxnState.COMMITTED and (g is None or g.state != TxnState.COMMITTED):
            if not self.settled and (g is None or g.state == TxnState.INITIATED):
                sums.doubt.add(f"{txn_id} committed at {bank}, not yet seen decided")
            else:
                sums.lines.add(f"{txn_id} committed at {bank} but the gateway decided "
                               f"{g.state if g else 'nothing'}")

    def _gateway_txn(self, txn_id: str, g: GatewayTxnView, at_banks: Mapping[str, tuple[str, Legs]]) -> None:
        if g.state == TxnState.COMMITTED:
            self.r.committed += 1
            self._settler.add_payment(g.payer, g.payee, g.amount, g.decided_at)
        elif g.state == TxnState.ABORTED:
            self.r.aborted += 1
        else:
            self._gateway_doubt.add(f"{txn_id} undecided at the gateway")
        if g.state == TxnState.COMMITTED and not g.acked:
            self._gateway_doubt.add(f"{txn_id} committed, not yet acknowledged by every bank")
        for bank in dict.fromkeys((_bank_of(g.payer), _bank_of(g.payee))):
            state = at_banks.get(bank, ("", ()))[0]
            if g.state == TxnState.COMMITTED and state not in (TxnState.COMMITTED, TxnState.PREPARED):
                if not self.settled and not state and bank in self.banks:
                    # The bank was read first: the payment reached it after.
                    self._gateway_doubt.add(f"{txn_id} committed at the gateway, not yet seen at {bank}")
                else:
                    self._gateway_lines.add(f"{txn_id} committed at the gateway but {state.lower() or 'unknown'} "
                                            f"at {bank}")
            if g.state != TxnState.COMMITTED and state == TxnState.COMMITTED:
                if not self.settled and g.state == TxnState.INITIATED:
                    self._gateway_doubt.add(f"{txn_id} committed at {bank}, not yet seen decided")
                else:
                    self._gateway_lines.add(f"{txn_id} is {g.state.lower()} at the gateway but committed at {bank}")

    def _ledger_flows(self, txn_id: str, g: GatewayTxnView | None, at_banks: Mapping[str, tuple[str, Legs]]) -> None:
        """This id's money between banks three ways: the gateway's, the payer's bank's, the payee's bank's."""
        gateway: dict[Pair, int] = {}
        if g is not None and g.state == TxnState.COMMITTED:
            gateway[(g.payer.rpartition("@")[2], g.payee.rpartition("@")[2])] = g.amount
        debits: dict[Pair, int] = {}
        credits: dict[Pair, int] = {}
        for bank, (state, legs) in at_banks.items():
            if state != TxnState.COMMITTED:  # deposits (DEPOSITED) move no money between banks
                continue
            for account, delta, counterparty in legs:
                other = counterparty.rpartition("@")[2]
                if "@" not in counterparty or not other:
                    self._nameless.add(f"{txn_id} at {bank} ({account} {delta:+d}, counterparty {counterparty!r})")
                elif delta < 0:
                    debits[(bank, other)] = debits.get((bank, other), 0) - delta
                else:
                    credits[(other, bank)] = credits.get((other, bank), 0) + delta
        for pair, amount in debits.items():
            sums = self._debited[pair]
            sums[0] += amount
            sums[1] += 1
        for pair, amount in credits.items():
            sums = self._credited[pair]
            sums[0] += amount
            sums[1] += 1
        if not gateway == debits == credits:
            for pair in gateway.keys() | debits.keys() | credits.keys():
                if not gateway.get(pair) == debits.get(pair) == credits.get(pair):
                    self._differ[pair].add(txn_id)

    def _refund(self, txn_id: str, g: GatewayTxnView) -> None:
        if g.state == TxnState.COMMITTED:
            self.r.refunds += 1
        self._refunds.append((txn_id, g))
        original = g.refund_of
        if original == txn_id:
            self._originals[original] = g
        elif original not in self._originals:
            (self._wanted if original > txn_id else self._look_txns).add(original)

    def _request(self, txn_id: str, g: GatewayTxnView | None, q: RequestView | None) -> None:
        """A collect request is paid once, by the payment that bears its id, as it asked; and only when approved.

        The gateway lists a request after its payment (on the same id), so a
        request can be ahead of its payment in one reading (approved or
        decided in between): in doubt until the reading is settled.
        """
        if txn_id in self._wanted_requests:
            self._wanted_requests.discard(txn_id)
            self._requests_seen[txn_id] = q
        if g is not None and g.request_id:
            rid = g.request_id
            if rid == txn_id:
                self._paid_as_asked(txn_id, g, q)
            else:
                self._paying.add(f"{txn_id} pays request {rid} under another id: a request's payment bears its id, "
                                 "so it is paid at most once", txn_id)
                self._elsewhere.append((txn_id, g))
                if rid not in self._requests_seen:
                    (self._wanted_requests if rid > txn_id else self._look_requests).add(rid)
        if q is None:
            return
        self.r.requests += 1
        expected = {"PAID": TxnState.COMMITTED, "FAILED": TxnState.ABORTED, "PAYING": TxnState.INITIATED}
        if q.state in ("PENDING", "DECLINED", "EXPIRED"):
            if g is not None:
                self._asked.add(f"request {txn_id} is {q.state.lower()}, yet payment {txn_id} exists "
                                f"({g.state.lower()})")
        elif q.state not in expected:
            self._asked.add(f"request {txn_id} is in no known state ({q.state!r})")
        elif g is not None and g.state == expected[q.state]:
            pass
        elif not self.settled and (g is None or g.state == TxnState.INITIATED):
            self._request_doubt.add(f"request {txn_id} {q.state.lower()}, its payment not yet seen so")
        else:
            self._asked.add(f"request {txn_id} is {q.state.lower()} but its payment {txn_id} is "
                            f"{g.state.lower() if g else 'missing'}")

    def _paid_as_asked(self, txn_id: str, g: GatewayTxnView, q: RequestView | None) -> None:
        rid = g.request_id
        if q is None:
            self._paying.add(f"{txn_id} pays request {rid}, which the gateway does not know", txn_id)
        elif (g.payer, g.payee, g.amount) != (q.payer, q.payee, q.amount):
            self._paying.add(f"{txn_id} pays request {rid} as {g.payer} -> {g.payee} {g.amount}, but it asked "
                             f"{q.payer} -> {q.payee} {q.amount}", txn_id)

    def _daily(self, txn_id: str, g: GatewayTxnView, cluster: ClusterConfig) -> None:
        if g.state != TxnState.COMMITTED or g.refund_of or cluster.daily_limit_of(g.payer) <= 0:
            return
        day = datetime.fromtimestamp(g.created_at, cluster.zone).date().isoformat()
        sent = self._sent.get((g.payer, day))
        if sent is None:
            sent = self._sent[(g.payer, day)] = [0, _Ids()]
        sent[0] += g.amount
        sent[1].add(txn_id)

    # -- the end --------------------------------------------------------------------------------------

    def lookups(self) -> tuple[set[str], set[str]]:
        """The ids to read again before `finish`: payments refunded, and requests paid under another id,
        that the run passed before the refund or payment that names them."""
        return set(self._look_txns), set(self._look_requests)

    def finish(self, txns: Mapping[str, GatewayTxnView | None] | None = None,
               requests: Mapping[str, RequestView | None] | None = None) -> AuditReport:
        """The report, given what `lookups` named, read again (an id missing from these is unknown)."""
        r = self.r
        bad = r.violations.extend
        for name, bank in self.banks.items():
            sums = self._sums[name]
            bad(sums.lines.lines())
            r.issued += bank.deposits
            r.issued_by_treasury += bank.treasury
            if sums.deposited != bank.treasury:
                bad([f"{name} counts {bank.treasury} issued by the treasury but its deposits add up to "
                     f"{sums.deposited}"])
            for account, (balance, held, opening) in bank.accounts.items():
                r.accounts += 1
                r.total += balance
                bad(_account_violations(f"{account}@{name}", balance, held, opening, sums.holds.get(account, 0),
                                        sums.committed.get(account, 0)))
            bad([f"{name} has transactions for unknown account {account}"
                 for account in sorted(sums.committed.keys() | sums.holds.keys()) if account not in bank.accounts])
            r.in_doubt.extend(sums.doubt.lines())
        bad(self._gateway_lines.lines())
        r.in_doubt.extend(self._gateway_doubt.lines())
        # While a payment is committed on one bank and not yet on the other, money is in transit.
        in_transit = not self.settled and bool(r.in_doubt)
        if r.total != r.issued and not in_transit:
            bad([f"total money {r.total} differs from the money issued {r.issued}"])
        self._settlement(in_transit)
        self._originals.update(dict.fromkeys(self._wanted))  # after the last id: never recorded
        self._originals.update({i: (txns or {}).get(i) for i in self._look_txns})
        self._check_refunds()
        if self.judge_requests:
            self._requests_seen.update(dict.fromkeys(self._wanted_requests))
            self._requests_seen.update({i: (requests or {}).get(i) for i in self._look_requests})
            for txn_id, g in self._elsewhere:
                self._paid_as_asked(txn_id, g, self._requests_seen.get(g.request_id))
            bad(self._paying.lines())
            bad(self._asked.lines())
            r.in_doubt.extend(self._request_doubt.lines())
        if self.cluster is not None:
            self._check_daily_limits(self.cluster)
        if self.settled:
            bad(f"in doubt with every node up: {d}" for d in r.in_doubt)
        return r

    def _settlement(self, in_transit: bool) -> None:
        """The gateway's settlement of every committed payment, checked against each side's ledger."""
        r = self.r
        r.settlement = report = self._settler.report(self.banks)
        if sum(report.net.values()) != 0:
            r.violations.append(f"the net positions {report.net} sum to {sum(report.net.values())}, not zero")
        if in_transit:  # a payment applied at one bank and not yet at the other: the three cannot agree yet
            return
        r.violations.extend(f"committed leg names no account at a bank as its counterparty: {leg}"
                            for leg in self._nameless.lines())
        figures = {(f.from_bank, f.to_bank): (f.amount, f.payments) for f in (*report.gross, *report.intra_bank)}
        for pair in sorted(figures.keys() | self._debited.keys() | self._credited.keys()):
            frm, to = pair
            settled_as = figures.get(pair, (0, 0))
            debited, credited = tuple(self._debited.get(pair, (0, 0))), tuple(self._credited.get(pair, (0, 0)))
            if settled_as == debited == credited:
                continue
            r.violations.append(
                f"settlement {frm} -> {to}: the gateway settles {_in(*settled_as)}, {frm}'s ledger debits "
                f"{_in(*debited)}, {to}'s ledger credits {_in(*credited)}; payments that differ: "
                f"{self._differ.get(pair) or 'none'}")

    def _check_refunds(self) -> None:
        """A refund gives back a committed payment that is not itself a refund, the way it came, never more than it."""
        bad = self.r.violations.append
        refunded: dict[str, list[tuple[str, int]]] = defaultdict(list)  # original id -> its committed refunds
        for txn_id, g in self._refunds:
            if g.state == TxnState.COMMITTED:
                refunded[g.refund_of].append((txn_id, g.amount))
            original = self._originals.get(g.refund_of)
            if original is None:
                bad(f"refund {txn_id} gives back {g.refund_of}, which the gateway never recorded")
                continue
            if original.state != TxnState.COMMITTED:
                bad(f"refund {txn_id} ({g.state.lower()}) gives back {g.refund_of}, which is "
                    f"{original.state.lower()}: only a committed payment can be refunded")
            if original.refund_of:
                bad(f"refund {txn_id} gives back {g.refund_of}, itself a refund of {original.refund_of}")
            if (g.payer, g.payee) != (original.payee, original.payer):
                bad(f"refund {txn_id} goes {g.payer} -> {g.payee}, not back the way {g.refund_of} "
                    f"came ({original.payer} -> {original.payee})")
        for original_id, refunds in refunded.items():
            original = self._originals.get(original_id)
            total = sum(amount for _, amount in refunds)
            if original is not None and total > original.amount:
                bad(f"{original_id} of {original.amount} has {total} refunded, more than it: "
                    f"committed refunds {_ids(i for i, _ in refunds)}")

    def _check_daily_limits(self, cluster: ClusterConfig) -> None:
        """No payer's committed payments, refunds aside, add up to more than its limit on one calendar day."""
        for (payer, day), (total, ids) in sorted(self._sent.items()):
            limit = cluster.daily_limit_of(payer)
            if total > limit:
                self.r.violations.append(f"{payer} sent {total} on {day} ({cluster.time_zone}), over its daily "
                                         f"limit {limit}: payments {ids}")


def _account_violations(where: str, balance: int, held: int, opening: int, holds: int, committed: int) -> list[str]:
    out = []
    if balance < 0:
        out.append(f"{where} has a negative balance {balance}")
    if held != holds:
        out.append(f"{where} holds {held} but its prepared debits add up to {holds}")
    if held > balance:
        out.append(f"{where} holds {held}, more than its balance {balance}")
    if balance != opening + committed:
        out.append(f"{where} balance {balance} is not its opening {opening} plus its committed payments and "
                   f"deposits {committed}: a payment was lost or applied twice")
    return out
