"""`miniupi audit`: read every node and check the invariants of DESIGN.md section 2.

The checker is a plain function over what the nodes reported, so the same
code serves the command line, the benchmark and the chaos test's final
verdict. Transactions still being decided count as "in doubt"; once all
nodes are up they must settle, so `audit` waits (bounded) before it judges.

Money enters only as issued money the banks count: opening balances (setup
files, capped opening deposits, bulk openings) and treasury deposits, which
a bank records as DEPOSITED transactions of their own. The sum of every
balance must equal what was issued.

The gateway's own rules are checked over its transactions and collect
requests: refunds never exceed their original and go back the way it
came; a request is paid exactly once, as asked; no payer sent more than
the daily limit in a calendar day. Settlement between banks is reckoned
three ways, which must agree: from the gateway's committed payments (the
figures its Settlement call reports), from each payer's bank's debits
and from each payee's bank's credits.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import grpc

from miniupi.config import GATEWAY, ClusterConfig, NodeConfig
from miniupi.errors import Unavailable
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.settlement import Flow, Settlement, settle
from miniupi.states import TxnState
from miniupi.tls import dial
from miniupi.v1 import bank_pb2, bank_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc



@dataclass
class BankView:
    name: str
    deposits: int = 0  # every minor unit ever issued at this bank
    treasury: int = 0  # the part of it that treasury deposits brought
    accounts: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (balance, held, opening)
    # id -> (state, [(account, delta, counterparty)]): the account is the user part at this bank, the
    # counterparty the other side as user@bank ("treasury" for a deposit).
    txns: dict[str, tuple[str, list[tuple[str, int, str]]]] = field(default_factory=dict)


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
    # Every committed payment, all time, as the gateway's settle() reckons it; the banks' ledgers agree
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


def check(gateway: Mapping[str, GatewayTxnView], banks: list[BankView], settled: bool = True,
          cluster: ClusterConfig | None = None) -> AuditReport:
    """Every invariant over one reading of the cluster; `settled` makes in-doubt a violation.

    The collect requests are checked when `gateway` is a GatewayView, which carries them; the daily
    limit when `cluster` is given, as it holds the limits and the time zone of their days.
    """
    r = AuditReport(banks=len(banks))
    bad = r.violations.append
    by_bank = {b.name: b for b in banks}
    for bank in banks:
        committed_sum: dict[str, int] = defaultdict(int)
        prepared_holds: dict[str, int] = defaultdict(int)
        deposited = 0
        for txn_id, (state, legs) in bank.txns.items():
            for account, delta, _ in legs:
                if state in (TxnState.COMMITTED, TxnState.DEPOSITED):
                    committed_sum[account] += delta
                elif state == TxnState.PREPARED and delta < 0:
                    prepared_holds[account] -= delta
            if state == TxnState.DEPOSITED:
                r.deposits += 1
                deposited += sum(delta for _, delta, _ in legs)
            if state == TxnState.PREPARED:
                r.in_doubt.append(f"{txn_id} prepared at {bank.name}")
            g = gateway.get(txn_id)
            if state == TxnState.COMMITTED and (g is None or g.state != TxnState.COMMITTED):
                if not settled and (g is None or g.state == TxnState.INITIATED):
                    # Read after the gateway: decided in between. The settled re-read judges it.
                    r.in_doubt.append(f"{txn_id} committed at {bank.name}, not yet seen decided")
                else:
                    bad(f"{txn_id} committed at {bank.name} but the gateway decided {g.state if g else 'nothing'}")
        r.issued += bank.deposits
        r.issued_by_treasury += bank.treasury
        if deposited != bank.treasury:
            bad(f"{bank.name} counts {bank.treasury} issued by the treasury but its deposits add up to {deposited}")
        for name, (balance, held, opening) in bank.accounts.items():
            r.accounts += 1
            r.total += balance
            where = f"{name}@{bank.name}"
            if balance < 0:
                bad(f"{where} has a negative balance {balance}")
            if held != prepared_holds.get(name, 0):
                bad(f"{where} holds {held} but its prepared debits add up to {prepared_holds.get(name, 0)}")
            if held > balance:
                bad(f"{where} holds {held}, more than its balance {balance}")
            if balance != opening + committed_sum.get(name, 0):
                bad(f"{where} balance {balance} is not its opening {opening} plus its committed payments and "
                    f"deposits {committed_sum.get(name, 0)}: a payment was lost or applied twice")
        for name in set(committed_sum) | set(prepared_holds):
            if name not in bank.accounts:
                bad(f"{bank.name} has transactions for unknown account {name}")
    for txn_id, g in gateway.items():
        if g.state == TxnState.COMMITTED:
            r.committed += 1
        elif g.state == TxnState.ABORTED:
            r.aborted += 1
        else:
            r.in_doubt.append(f"{txn_id} undecided at the gateway")
        if g.state == TxnState.COMMITTED and not g.acked:
            r.in_doubt.append(f"{txn_id} committed, not yet acknowledged by every bank")
        for account in {g.payer, g.payee}:
            bank_name = account.split("@")[1]
            bank = by_bank.get(bank_name)
            state = bank.txns.get(txn_id, ("", []))[0] if bank else ""
            if g.state == TxnState.COMMITTED and state not in (TxnState.COMMITTED, TxnState.PREPARED):
                bad(f"{txn_id} committed at the gateway but {state.lower() or 'unknown'} at {bank_name}")
            if g.state != TxnState.COMMITTED and state == TxnState.COMMITTED:
                if not settled and g.state == TxnState.INITIATED:
                    r.in_doubt.append(f"{txn_id} committed at {bank_name}, not yet seen decided")
                else:
                    bad(f"{txn_id} is {g.state.lower()} at the gateway but committed at {bank_name}")
    # While a payment is committed on one bank and not yet on the other, money is in transit.
    in_transit = not settled and bool(r.in_doubt)
    if r.total != r.issued and not in_transit:
        bad(f"total money {r.total} differs from the money issued {r.issued}")
    _check_settlement(gateway, banks, in_transit, r)
    _check_refunds(gateway, r)
    if isinstance(gateway, GatewayView):  # a plain mapping is a reading without the requests
        _check_requests(gateway, gateway.requests, settled, r)
    if cluster is not None:
        _check_daily_limits(gateway, cluster, r)
    if settled:
        r.violations.extend(f"in doubt with every node up: {d}" for d in r.in_doubt)
    return r


def _ids(ids: Iterable[str], most: int = 5) -> str:
    """Ids for a message: the first `most`, sorted, and how many more."""
    ids = sorted(ids)
    more = f" and {len(ids) - most} more" if len(ids) > most else ""
    return ", ".join(ids[:most]) + more


def _in(amount: int, payments: int) -> str:
    return f"{amount} in {payments} payment{'' if payments == 1 else 's'}"


def _check_refunds(gateway: Mapping[str, GatewayTxnView], r: AuditReport) -> None:
    """A refund gives back a committed payment that is not itself a refund, the way it came, never more than it."""
    refunded: dict[str, list[str]] = defaultdict(list)  # original id -> its committed refunds
    for txn_id, g in gateway.items():
        if not g.refund_of:
            continue
        if g.state == TxnState.COMMITTED:
            r.refunds += 1
            refunded[g.refund_of].append(txn_id)
        original = gateway.get(g.refund_of)
        if original is None:
            r.violations.append(f"refund {txn_id} gives back {g.refund_of}, which the gateway never recorded")
            continue
        if original.state != TxnState.COMMITTED:
            r.violations.append(f"refund {txn_id} ({g.state.lower()}) gives back {g.refund_of}, which is "
                                f"{original.state.lower()}: only a committed payment can be refunded")
        if original.refund_of:
            r.violations.append(f"refund {txn_id} gives back {g.refund_of}, itself a refund of {original.refund_of}")
        if (g.payer, g.payee) != (original.payee, original.payer):
            r.violations.append(f"refund {txn_id} goes {g.payer} -> {g.payee}, not back the way {g.refund_of} "
                                f"came ({original.payer} -> {original.payee})")
    for original_id, refund_ids in refunded.items():
        original = gateway.get(original_id)
        total = sum(gateway[i].amount for i in refund_ids)
        if original is not None and total > original.amount:
            r.violations.append(f"{original_id} of {original.amount} has {total} refunded, more than it: "
                                f"committed refunds {_ids(refund_ids)}")


def _check_requests(gateway: Mapping[str, GatewayTxnView], requests: Mapping[str, RequestView], settled: bool,
                    r: AuditReport) -> None:
    """A collect request is paid once, by the payment that bears its id, as it asked; and only when approved.

    The gateway lists its transactions before its requests, so a request can be
    ahead of its payment in one reading (approved or decided in between): in
    doubt until the reading is settled.
    """
    r.requests = len(requests)
    bad = r.violations.append
    for txn_id, g in gateway.items():
        if not g.request_id:
            continue
        rid = g.request_id
        if txn_id != rid:
            bad(f"{txn_id} pays request {rid} under another id: a request's payment bears its id, so it "
                f"is paid at most once")
        q = requests.get(rid)
        if q is None:
            bad(f"{txn_id} pays request {rid}, which the gateway does not know")
        elif (g.payer, g.payee, g.amount) != (q.payer, q.payee, q.amount):
            bad(f"{txn_id} pays request {rid} as {g.payer} -> {g.payee} {g.amount}, but it asked "
                f"{q.payer} -> {q.payee} {q.amount}")
    expected = {"PAID": TxnState.COMMITTED, "FAILED": TxnState.ABORTED, "PAYING": TxnState.INITIATED}
    for rid, q in requests.items():
        g = gateway.get(rid)
        if q.state in ("PENDING", "DECLINED", "EXPIRED"):
            if g is not None:
                bad(f"request {rid} is {q.state.lower()}, yet payment {rid} exists ({g.state.lower()})")
            continue
        if q.state not in expected:
            bad(f"request {rid} is in no known state ({q.state!r})")
        elif g is not None and g.state == expected[q.state]:
            continue
        elif not settled and (g is None or g.state == TxnState.INITIATED):
            r.in_doubt.append(f"request {rid} {q.state.lower()}, its payment not yet seen so")
        else:
            bad(f"request {rid} is {q.state.lower()} but its payment {rid} is "
                f"{g.state.lower() if g else 'missing'}")


def _check_daily_limits(gateway: Mapping[str, GatewayTxnView], cluster: ClusterConfig, r: AuditReport) -> None:
    """No payer's committed payments, refunds aside, add up to more than its limit on one calendar day."""
    sent: dict[tuple[str, str], list[str]] = defaultdict(list)  # (payer, day) -> payment ids
    for txn_id, g in gateway.items():
        if g.state == TxnState.COMMITTED and not g.refund_of and cluster.daily_limit_of(g.payer) > 0:
            day = datetime.fromtimestamp(g.created_at, cluster.zone).date().isoformat()
            sent[(g.payer, day)].append(txn_id)
    for (payer, day), ids in sorted(sent.items()):
        total, limit = sum(gateway[i].amount for i in ids), cluster.daily_limit_of(payer)
        if total > limit:
            r.violations.append(f"{payer} sent {total} on {day} ({cluster.time_zone}), over its daily limit "
                                f"{limit}: payments {_ids(ids)}")


Pair = tuple[str, str]  # (payer's bank, payee's bank)


def ledger_flows(banks: list[BankView]) -> tuple[dict[Pair, dict[str, int]], dict[Pair, dict[str, int]], list[str]]:
    """The committed payments between banks as the banks' ledgers tell them: by the payer's bank's debits and
    by the payee's bank's credits, each pair -> {txn id: amount}; and the legs that name no bank."""
    debits: dict[Pair, dict[str, int]] = defaultdict(dict)
    credits: dict[Pair, dict[str, int]] = defaultdict(dict)
    nameless: list[str] = []
    for bank in banks:
        for txn_id, (state, legs) in bank.txns.items():
            if state != TxnState.COMMITTED:  # deposits (DEPOSITED) move no money between banks
                continue
            for account, delta, counterparty in legs:
                other = counterparty.rpartition("@")[2]
                if "@" not in counterparty or not other:
                    nameless.append(f"{txn_id} at {bank.name} ({account} {delta:+d}, counterparty {counterparty!r})")
                elif delta < 0:
                    debits[(bank.name, other)][txn_id] = debits[(bank.name, other)].get(txn_id, 0) - delta
                else:
                    credits[(other, bank.name)][txn_id] = credits[(other, bank.name)].get(txn_id, 0) + delta
    return debits, credits, nameless


def _check_settlement(gateway: Mapping[str, GatewayTxnView], banks: list[BankView], in_transit: bool,
                      r: AuditReport) -> None:
    """The gateway's settlement of every committed payment, checked against each side's ledger."""
    committed = [Txn(Payment(txn_id, g.payer, g.payee, g.amount, ""), TxnState.COMMITTED, decided_at=g.decided_at)
                 for txn_id, g in gateway.items() if g.state == TxnState.COMMITTED]
    r.settlement = report = settle(committed, [b.name for b in banks])
    if sum(report.net.values()) != 0:
        r.violations.append(f"the net positions {report.net} sum to {sum(report.net.values())}, not zero")
    if in_transit:  # a payment applied at one bank and not yet at the other: the three cannot agree yet
        return
    debits, credits, nameless = ledger_flows(banks)
    r.violations.extend(f"committed leg names no account at a bank as its counterparty: {leg}" for leg in nameless)
    by_gateway: dict[Pair, dict[str, int]] = defaultdict(dict)
    for txn in committed:
        p = txn.payment
        by_gateway[(p.payer.rpartition("@")[2], p.payee.rpartition("@")[2])][p.txn_id] = p.amount
    figures = {(f.from_bank, f.to_bank): (f.amount, f.payments) for f in (*report.gross, *report.intra_bank)}
    for pair in sorted(set(figures) | set(debits) | set(credits)):
        frm, to = pair
        settled_as = figures.get(pair, (0, 0))
        debited = (sum(debits[pair].values()), len(debits[pair]))
        credited = (sum(credits[pair].values()), len(credits[pair]))
        if settled_as == debited == credited:
            continue
        differ = {i for i in set(by_gateway[pair]) | set(debits[pair]) | set(credits[pair])
                  if not by_gateway[pair].get(i) == debits[pair].get(i) == credits[pair].get(i)}
        r.violations.append(
            f"settlement {frm} -> {to}: the gateway settles {_in(*settled_as)}, {frm}'s ledger debits "
            f"{_in(*debited)}, {to}'s ledger credits {_in(*credited)}; payments that differ: {_ids(differ) or 'none'}")


# How far a transaction got; of two gateways' readings of one id, the further counts.
_PROGRESS = {TxnState.INITIATED: 0, TxnState.ABORTED: 1, TxnState.COMMITTED: 2}


def merge_gateways(views: list[GatewayView]) -> GatewayView:
    """Every gateway's reading as one.

    Gateways sharing a store report the same rows. Gateways with stores of
    their own may both hold an id a client resent to the second when the
    first died holding it: the first presumed abort on restart, the second
    ran it to its end, and that end is what the banks were told, so it is
    the one checked against them.
    """
    merged = GatewayView()
    for view in views:
        for txn_id, txn in view.items():
            known = merged.get(txn_id)
            if known is None or _PROGRESS.get(txn.state, 0) > _PROGRESS.get(known.state, 0):
                merged[txn_id] = txn
        merged.requests.update(view.requests)
    return merged


async def collect(cluster: ClusterConfig, timeout: float = 30.0) -> tuple[GatewayView, list[BankView]]:
    """Read every gateway and every bank, as the admin."""
    def channel(peer: str, address: str) -> grpc.aio.Channel:
        return dial(cluster.certs_dir, "admin", peer, address)

    async def read_bank(name: str) -> BankView:
        view = BankView(name)
        async with channel(name, cluster.banks[name].address) as bank:
            try:
                async for chunk in bank_pb2_grpc.BankStub(bank).Audit(bank_pb2.AuditRequest(), timeout=timeout):
                    view.deposits += chunk.deposits_minor
                    view.treasury += chunk.treasury_minor
                    for a in chunk.accounts:
                        view.accounts[a.account] = (a.balance_minor, a.held_minor, a.opening_minor)
                    for t in chunk.txns:
                        view.txns[t.txn_id] = (t.state, [(leg.account, leg.delta_minor, leg.counterparty)
                                                         for leg in t.legs])
            except grpc.aio.AioRpcError as e:
                raise Unavailable(f"cannot audit {name}: {e.code().name} {e.details()}") from None
        return view

    async def read_gateway(node: NodeConfig) -> GatewayView:
        out = GatewayView()
        async with channel(node.identity, node.address) as gateway:
            stub = gateway_pb2_grpc.GatewayStub(gateway)
            try:
                async for chunk in stub.ListTransactions(gateway_pb2.ListTransactionsRequest(), timeout=timeout):
                    for t in chunk.txns:
                        out[t.txn_id] = GatewayTxnView(t.from_account, t.to_account, t.amount.minor,
                                                       common_pb2.TxnState.Name(t.state), t.acknowledged,
                                                       t.refund_of, t.request_id, t.created_at, t.decided_at)
                    for q in chunk.requests:
                        state = gateway_pb2.RequestState.Name(q.state).removeprefix("REQUEST_")
                        out.requests[q.request_id] = RequestView(q.from_account, q.to_account, q.amount.minor, state)
            except grpc.aio.AioRpcError as e:
                which = "the gateway" if node.name == GATEWAY else f"gateway {node.name}"
                raise Unavailable(f"cannot audit {which}: {e.code().name} {e.details()}") from None
        return out

    # The gateways first: a bank commit they do not know yet would look like a violation.
    gateway = merge_gateways([await read_gateway(node) for node in cluster.gateways.values()])
    banks = await asyncio.gather(*(read_bank(name) for name in cluster.banks))
    return gateway, list(banks)


async def audit(cluster: ClusterConfig, settle_s: float = 30.0) -> AuditReport:
    """Wait up to `settle_s` for in-doubt transactions to settle, then judge."""
    deadline = time.monotonic() + settle_s
    while True:
        report = check(*await collect(cluster), settled=False, cluster=cluster)
        if not report.in_doubt or time.monotonic() >= deadline:
            return check(*await collect(cluster), settled=True, cluster=cluster) if report.in_doubt else report
        await asyncio.sleep(0.5)
