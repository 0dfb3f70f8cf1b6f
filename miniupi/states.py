"""The states a transaction passes through, one enum for the gateway, the banks and the audit.

A `StrEnum`, so each member is the very string stores have always held
("COMMITTED", ...), the bank's audit sends and the proto's TxnState names:
records written before this enum existed load unchanged, and a member
compares equal to its string.
"""
from __future__ import annotations

from enum import StrEnum


class TxnState(StrEnum):
    INITIATED = "INITIATED"  # gateway: recorded with its details, not yet decided
    PREPARED = "PREPARED"  # bank: voted YES, holds placed, waiting for the decision
    COMMITTED = "COMMITTED"  # decided (gateway) or applied (bank): the money moved
    ABORTED = "ABORTED"  # decided or applied: nothing moved
    DEPOSITED = "DEPOSITED"  # bank: a treasury deposit, applied when made, never part of 2PC
