"""Outbox entries and flush results in words and JSON, the same at the command line and in the REPL."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

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
