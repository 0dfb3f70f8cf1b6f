"""What the verbs print, in words and JSON, the same at the command line and in the REPL: outbox
entries and flush results, transactions, collect requests and the settlement between banks."""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from miniupi.client.api import CollectRequest, Flow, SettlementReport, Transaction
from miniupi.client.outbox import DONE, FAILED, OutboxEntry
from miniupi.client.sync import SyncReport
from miniupi.errors import MiniupiError, Unauthenticated
from miniupi.money import format_amount


def money(entry: OutboxEntry) -> str:
    return f"{format_amount(entry.amount)} {entry.currency}"


def paid(entry: OutboxEntry) -> str:
    """The line `miniupi pay` has always printed for a payment that went through."""
    return f"paid {money(entry)} to {entry.payee} (txn {entry.txn_id})"


def finished(entry: OutboxEntry) -> str:
    """One line for a payment that has its final answer."""
    if entry.state == DONE:
        return paid(entry)
    return f"payment of {money(entry)} to {entry.payee} failed: {entry.error_message} (txn {entry.txn_id})"


def reason(stopped: MiniupiError | None) -> str:
    """Why the queue did not move; None means another flush held the outbox."""
    return "another miniupi process is sending the outbox" if stopped is None else stopped.message


def queued(stopped: MiniupiError | None) -> str:
    """The one line for a payment taken but not sent yet: why, and what happens next."""
    if isinstance(stopped, Unauthenticated):
        return f"queued: {reason(stopped)}; it will be sent after you log in again"
    return f"queued: {reason(stopped)}, will retry"


def when(ts: float, now: float | None = None) -> str:
    """'14:03:12 (in 8 s)', or 'now' when due."""
    now = time.time() if now is None else now
    wait = ts - now
    if wait <= 0:
        return "now"
    return f"{datetime.fromtimestamp(ts).strftime('%H:%M:%S')} (in {wait:.0f} s)"


def queue_line(entry: OutboxEntry, now: float | None = None) -> str:
    """One row of `miniupi queue`."""
    if entry.state in (DONE, FAILED):
        return f"{entry.state:<7} {money(entry):>14}  {entry.payer} -> {entry.payee}  attempts {entry.attempts}  " \
               f"{entry.result or entry.error_message}  txn {entry.txn_id}"
    why = f"  ({entry.last_error})" if entry.last_error else ""
    return f"{entry.state:<7} {money(entry):>14}  {entry.payer} -> {entry.payee}  attempts {entry.attempts}  " \
           f"next {when(entry.next_attempt_at, now)}{why}  txn {entry.txn_id}"


def entry_json(entry: OutboxEntry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "txn_id": entry.txn_id, "from": entry.payer, "to": entry.payee, "amount": format_amount(entry.amount),
        "currency": entry.currency, "state": entry.state.upper(), "attempts": entry.attempts,
        "created_at": entry.created_at,
    }
    if entry.pending:
        data.update(next_attempt_at=entry.next_attempt_at, last_error=entry.last_error)
    elif entry.state == DONE:
        data.update(result=entry.result, finished_at=entry.finished_at)
    else:
        data.update(code=entry.error_code, error=entry.error_message, finished_at=entry.finished_at)
    return data


def report_json(report: SyncReport) -> dict[str, Any]:
    return {
        "sent": [entry_json(e) for e in report.finished],
        "pending": report.pending,
        "stopped": None if report.stopped is None else {"code": report.stopped.code, "error": report.stopped.message},
        "busy": report.busy,
    }


# -- times -------------------------------------------------------------------------


def local_time(ts: float) -> str:
    """A moment in this machine's time zone, as `history` shows it."""
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def clock(ts: float, now: float | None = None) -> str:
    """'14:05' today, else '2026-12-07 14:05'; this machine's time zone."""
    at = datetime.fromtimestamp(ts)
    today = datetime.fromtimestamp(time.time() if now is None else now).date()
    return at.strftime("%H:%M" if at.date() == today else "%Y-%m-%d %H:%M")


def _opt(value: Any) -> Any:
    """An empty field of the wire (0, ''), as JSON's null."""
    return value or None


def _rows(header: str, rows: list[tuple[str, str]]) -> list[str]:
    return [header, *(f"  {name:<10} {value}" for name, value in rows)]


# -- transactions (`miniupi txn`) -----------------------------------------------------


def refusal(code: str, reason: str, message: str) -> str:
    """'FAILED_PRECONDITION (INSUFFICIENT_FUNDS): insufficient funds'; the reason only where it says more."""
    return f"{code}{f' ({reason})' if reason and reason != code else ''}: {message}"


def transaction(t: Transaction) -> list[str]:
    """A transaction as the gateway recorded it, one field a line."""
    rows = [("amount", f"{format_amount(t.amount)} {t.currency}"), ("from", t.payer), ("to", t.payee),
            ("created", local_time(t.created_at)),
            ("decided", local_time(t.decided_at) if t.decided_at else "not yet")]
    if t.refund_of:
        rows.append(("refund of", t.refund_of))
    if t.request_id:
        rows.append(("request", f"{t.request_id} (a collect request it paid)"))
    if t.refusal_code:
        rows.append(("refused", refusal(t.refusal_code, t.refusal_reason, t.refusal_message)))
    width = max((len(format_amount(r.amount)) for r in t.refunds), default=0)
    rows += [("refunds" if i == 0 else "", f"{r.txn_id}  {format_amount(r.amount):>{width}} {t.currency}  {r.state}")
             for i, r in enumerate(t.refunds)]
    if t.state == "COMMITTED" and not t.refund_of:
        rows.append(("refunded", f"{format_amount(t.refunded)} of {format_amount(t.amount)} {t.currency}"))
    return _rows(f"txn {t.txn_id}: {t.state}", rows)


def transaction_json(t: Transaction) -> dict[str, Any]:
    return {
        "txn_id": t.txn_id, "state": t.state, "from": t.payer, "to": t.payee, "amount": format_amount(t.amount),
        "currency": t.currency, "created_at": t.created_at, "decided_at": _opt(t.decided_at),
        "refund_of": _opt(t.refund_of), "request_id": _opt(t.request_id),
        "refusal": {"code": t.refusal_code, "reason": t.refusal_reason, "message": t.refusal_message}
        if t.refusal_code else None,
        "refunds": [{"txn_id": r.txn_id, "amount": format_amount(r.amount), "state": r.state} for r in t.refunds],
        "refunded": format_amount(t.refunded),
    }


def _entry_rows(entry: OutboxEntry) -> list[tuple[str, str]]:
    return [("amount", money(entry)), ("from", entry.payer), ("to", entry.payee),
            ("taken", local_time(entry.created_at))]


def queued_transaction(entry: OutboxEntry, now: float | None = None) -> list[str]:
    """A payment only this client's outbox holds so far: no gateway needed to say so."""
    why = f" ({entry.last_error})" if entry.last_error else ""
    return _rows(f"txn {entry.txn_id}: QUEUED in this client's outbox, not answered by the gateway yet",
                 [*_entry_rows(entry),
                  ("attempts", f"{entry.attempts}, next {when(entry.next_attempt_at, now)}{why}")])


def refused_transaction(entry: OutboxEntry) -> list[str]:
    """A payment the gateway refused before recording it (a daily limit, a bad payee): the outbox has the answer."""
    return _rows(f"txn {entry.txn_id}: FAILED, refused before the gateway recorded it (from this client's outbox)",
                 [*_entry_rows(entry), ("refused", refusal(entry.error_code, entry.error_reason, entry.error_message))])


def outbox_transaction_json(entry: OutboxEntry) -> dict[str, Any]:
    """entry_json, with the state `txn` gives it: QUEUED while pending."""
    data = {**entry_json(entry), "state": "QUEUED" if entry.pending else entry.state.upper(),
            "outbox_state": entry.state}
    if entry.state == FAILED:
        data["reason"] = entry.error_reason
    return data


# -- collect requests -----------------------------------------------------------------


def request_money(r: CollectRequest) -> str:
    return f"{format_amount(r.amount)} {r.currency}"


def _note(r: CollectRequest, gap: str = " ") -> str:
    return f'{gap}"{r.note}"' if r.note else ""


def requested(r: CollectRequest, now: float | None = None) -> str:
    """The line of `miniupi request`."""
    if r.state == "PENDING":
        status = f"expires {clock(r.expires_at, now)}"
    else:  # a repeated id: the request as it stands
        status = r.state.lower() + (f": {r.refusal_message}" if r.refusal_message else "")
    return f"requested {request_money(r)} from {r.payer}{_note(r)} (request {r.request_id}); {status}"


def declined(r: CollectRequest) -> str:
    return f"declined request {r.request_id}: {request_money(r)}{_note(r)} asked by {r.payee}"


def open_request(r: CollectRequest, me: str, now: float | None = None) -> str:
    """One row of `miniupi requests`: who asks whom, how much, until when."""
    to_me = r.payer == me
    status = f"expires {clock(r.expires_at, now)}" if r.state == "PENDING" else "being paid"
    return (f"{'to me' if to_me else 'from me':<7}  {r.payee if to_me else r.payer:<24}  {request_money(r):>14}  "
            f"{status}{_note(r, '  ')}  request {r.request_id}")


def arrival(r: CollectRequest, tell: Callable[[str], str], now: float | None = None) -> str:
    """The REPL's line when a request to me arrives."""
    return (f"request {r.request_id} from {r.payee}: {request_money(r)}{_note(r)} "
            f"(expires {clock(r.expires_at, now)}); {tell(f'approve {r.request_id}')}")


def request_json(r: CollectRequest, me: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": r.request_id, "from": r.payer, "to": r.payee, "amount": format_amount(r.amount),
        "currency": r.currency, "note": r.note, "created_at": r.created_at, "expires_at": r.expires_at,
        "state": r.state, "refusal": _opt(r.refusal_message),
    }
    if me is not None:
        data["direction"] = "to_me" if r.payer == me else "from_me"
    return data


# -- settlement between banks -----------------------------------------------------------


def position(net: int) -> str:
    return "owed" if net > 0 else "owes" if net < 0 else "even"


def _zoned(ts: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M:%S")


def settlement(report: SettlementReport, zone: tzinfo) -> list[str]:
    """The readable table: gross flows, net positions, intra-bank flows apart, and the check that nets sum to zero."""
    cur = report.currency
    window = (f"from {_zoned(report.since, zone)}" if report.since else "from the start") + " " + \
             (f"until {_zoned(report.until, zone)}" if report.until else "until now")
    banks = [*report.net, *(f.from_bank for f in report.gross + report.intra_bank)]
    w = max(len("from"), *(len(b) for b in banks))
    amounts = [*(f.amount for f in report.gross + report.intra_bank), *(abs(n) for n in report.net.values())]
    a = max(len("amount"), *(len(format_amount(x)) for x in amounts))

    def flows(items: tuple[Flow, ...]) -> list[str]:
        if not items:
            return ["  none"]
        return [f"  {'from':<{w}}  {'to':<{w}}  {'payments':>8}  {'amount':>{a}}",
                *(f"  {f.from_bank:<{w}}  {f.to_bank:<{w}}  {f.payments:>8}  {format_amount(f.amount):>{a}} {cur}"
                  for f in items)]

    total = sum(report.net.values())
    return [
        f"settlement of the payments committed {window} ({zone}), in {cur}",
        "gross flows between banks:", *flows(report.gross),
        "net positions:",
        *(f"  {bank:<{w}}  {position(net):<4}  {format_amount(abs(net)):>{a}} {cur}"
          for bank, net in sorted(report.net.items())),
        "payments within one bank (they move nothing between banks):", *flows(report.intra_bank),
        f"check: the net positions sum to {format_amount(total)} {cur}" + ("" if total == 0 else ": NOT ZERO"),
    ]


def settlement_json(report: SettlementReport, zone: tzinfo) -> dict[str, Any]:
    def moment(ts: float) -> str | None:
        return datetime.fromtimestamp(ts, zone).isoformat() if ts else None

    def flows(items: tuple[Flow, ...]) -> list[dict[str, Any]]:
        return [{"from": f.from_bank, "to": f.to_bank, "payments": f.payments, "amount": format_amount(f.amount),
                 "amount_minor": f.amount} for f in items]

    total = sum(report.net.values())
    return {
        "since": moment(report.since), "until": moment(report.until), "since_ts": _opt(report.since),
        "until_ts": _opt(report.until), "time_zone": str(zone), "currency": report.currency,
        "gross": flows(report.gross),
        "net": [{"bank": bank, "position": position(net), "net": format_amount(net), "net_minor": net}
                for bank, net in sorted(report.net.items())],
        "intra_bank": flows(report.intra_bank),
        "net_sum": format_amount(total), "net_sum_minor": total,
    }
