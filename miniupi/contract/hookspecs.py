"""Every hook a miniupi plugin can implement: the whole extension surface.

Default behaviour (storage, auth, call logging) is supplied by plugins in
miniupi/plugins, registered through the `miniupi` entry point group exactly
like a third-party plugin. Set MINIUPI_TRACE_PLUGINS=1 to print every call.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc

    from miniupi.config import NodeConfig
    from miniupi.contract.registry import Register

hookspec = pluggy.HookspecMarker("miniupi")
hookimpl = pluggy.HookimplMarker("miniupi")


@hookspec
def miniupi_register_kinds(register: Register) -> None:
    """Plugins are loaded and the cluster file not yet checked: add the kinds you provide.

    Call `register.add_storage(StorageKind(...))` or `register.add_auth(AuthKind(...))`
    (miniupi.contract.registry) with each kind's name, factory and declared settings.
    A node picks its kinds by name; the core looks them up and refuses an
    unknown name or setting before anything starts.
    """


@hookspec
def miniupi_server_interceptors(node: NodeConfig) -> list[grpc.aio.ServerInterceptor]:
    """Server interceptors to install on every node, whatever its kinds; each plugin adds a list.

    They run outside the auth kind's interceptors and the core caller check.
    """


@hookspec
def miniupi_node_loaded(node: NodeConfig, readings: dict[str, Callable[[], int]]) -> None:
    """The node has loaded its state and does not serve yet; raising stops it from starting.

    `readings` names counts of the node's live state, each a function that
    returns it now, cheap and safe to call from any thread (the gateway's:
    payments_in_flight, decisions_unacknowledged, sessions_live).
    """


@hookspec
def miniupi_node_started(node: NodeConfig, address: str) -> None:
    """The node serves on `address`."""


@hookspec
def miniupi_node_stopped(node: NodeConfig) -> None:
    """The node has stopped serving and closed its store; the process is about to end."""


@hookspec
def miniupi_after_store_write(node: NodeConfig, seconds: float, items: int) -> None:
    """One durable write of the node's group commit took `seconds` and held `items` writers' batches.

    An observer, on every node: exceptions are logged.
    """


# Two-phase commit, step by step. Observers watch these; fault-injection
# plugins raise, sleep or exit in them to crash a node at an exact point.
# The rule for a hook that raises:
# - a hook *before* a step may veto it: the step is refused cleanly (the
#   payment is decided ABORTED, a vote is NO, a decision is applied later),
#   never left half done;
# - a hook *after* a durable step is an observer: its exception is logged
#   and ignored, and never changes the outcome nor stops phase 2.
# Gateway side:


@hookspec
def miniupi_before_prepare(node: NodeConfig, txn_id: str) -> None:
    """The gateway recorded the payment as INITIATED and is about to send the prepares.

    Raising vetoes the payment: no prepare is sent and it is decided ABORTED
    (PAYMENT_ABORTED, with the message of a raised MiniupiError).
    """


@hookspec
def miniupi_before_decision(node: NodeConfig, txn_id: str, decision: str) -> None:
    """Every vote is in; the decision is not yet durable (a crash here means presumed abort).

    Raising turns a COMMITTED decision into ABORTED (PAYMENT_ABORTED); an ABORTED one stays as it is.
    """


@hookspec
def miniupi_repeated_id(node: NodeConfig, txn_id: str) -> None:
    """A payment came for an id the gateway already knows (an outbox resend, a retry): it is answered
    from that id's record, never run again. An observer: exceptions are logged."""


@hookspec
def miniupi_after_prepare(node: NodeConfig, txn_id: str, bank: str, seconds: float, answer: str) -> None:
    """`bank` answered the prepare (a vote, a failure or a timeout) `seconds` after it was asked.

    `answer` says what it was, for people: "yes", "no: why" or "no answer: why".
    An observer: exceptions are logged.
    """


@hookspec
def miniupi_after_decision(node: NodeConfig, txn_id: str, decision: str, reason: str, kind: str) -> None:
    """The decision (COMMITTED or ABORTED) is durable; no bank has been told yet.

    `reason` is the refusal's machine-readable reason (errors.py; empty when
    committed), `kind` "payment", "refund" or "request" (a collect request's).
    An observer: an exception is logged and ignored; the client gets the decision and phase 2 runs.
    """


@hookspec
def miniupi_after_phase(node: NodeConfig, txn_id: str, phase: str, seconds: float) -> None:
    """A step of a new payment at the gateway ended, `seconds` after it began (a monotonic clock).

    `phase` is "payment" (its record to its durable decision), "prepare"
    (the prepares sent to every vote in), "decision_write" (the commit
    point's write) or "phase2" (the decision sent to every bank's ack).
    An observer: exceptions are logged.
    """


@hookspec
def miniupi_decision_resent(node: NodeConfig, txn_id: str, decision: str, attempt: int) -> None:
    """The gateway sends the durable decision to the banks again (`attempt` 1, 2, ...): a bank had not
    acknowledged the first try, or the gateway restarted or took the payment over. An observer:
    exceptions are logged."""


@hookspec
def miniupi_after_decision_sent(node: NodeConfig, txn_id: str, bank: str, decision: str) -> None:
    """`bank` acknowledged the decision; other banks may not have yet. An observer: exceptions are logged."""


# Bank side:


@hookspec
def miniupi_before_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    """The bank has decided its vote; a YES is not yet durable. Raising makes the vote NO."""


@hookspec
def miniupi_after_vote(node: NodeConfig, txn_id: str, yes: bool) -> None:
    """A YES vote is durable and about to be sent. An observer: exceptions are logged."""


@hookspec
def miniupi_before_apply(node: NodeConfig, txn_id: str, decision: str) -> None:
    """The bank is about to apply a decision to a transaction it prepared.

    Raising leaves it unapplied for now: the bank does not acknowledge, and the gateway sends the decision again.
    """


@hookspec
def miniupi_after_apply(node: NodeConfig, txn_id: str, decision: str) -> None:
    """The decision is applied and durable; the acknowledgement is about to be sent. An observer: exceptions are logged."""


# Sessions, gateway side: a crash test kills the gateway between the write and the answer.


@hookspec
def miniupi_after_session_written(node: NodeConfig, account: str, change: str) -> None:
    """A login's session (`change` "login") or a logout's end of one ("logout") is durable; the caller is not yet answered.

    An observer: an exception is logged and ignored, and the call is answered as if no plugin ran.
    """


# Logins, bank side: observers count guesses; tests count the checks a lockout lets through.


@hookspec
def miniupi_before_password_check(node: NodeConfig, account: str) -> None:
    """The bank has counted a login attempt at `account` and is about to hash the password.

    Called once per password check, for names without an account too (they
    are checked against a dummy hash); a locked account is refused without
    a check, and without this call. Raising refuses this login, unchecked,
    as the bank being unavailable.
    """
