"""The audit's checker before it streamed: every reading held in dicts, judged whole.

Kept as the oracle that tests/ops/test_invariants.py compares the streaming
checker with, as it stood at the commit before (miniupi/ops/audit.py), with
one change marked below: the audit now reads the banks before the gateway,
so a payment committed at the gateway and not yet known at a bank is in
doubt while the reading is not settled.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime

from miniupi.config import ClusterConfig
from miniupi.nodes.coordinator import Payment, Txn
from miniupi.nodes.settlement import settle
from miniupi.ops.invariants import AuditReport, BankView, GatewayTxnView, GatewayView, RequestView
from miniupi.states import TxnState


def old_check(gateway: Mapping[str, GatewayTxnView], banks: list[BankView], settled: bool = True,
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
                if not settled and not state and bank:  # changed: the banks are read first
                    r.in_doubt.append(f"{txn_id} committed at the gateway, not yet seen at {bank_name}")
                    continue
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

