from miniupi.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VoteRefusal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOTE_REFUSAL_UNSPECIFIED: _ClassVar[VoteRefusal]
    INSUFFICIENT_FUNDS: _ClassVar[VoteRefusal]
    UNKNOWN_ACCOUNT: _ClassVar[VoteRefusal]
    ALREADY_DECIDED: _ClassVar[VoteRefusal]
    WRONG_CURRENCY: _ClassVar[VoteRefusal]
    INVALID_REQUEST: _ClassVar[VoteRefusal]
    BALANCE_CEILING: _ClassVar[VoteRefusal]
VOTE_REFUSAL_UNSPECIFIED: VoteRefusal
INSUFFICIENT_FUNDS: VoteRefusal
UNKNOWN_ACCOUNT: VoteRefusal
ALREADY_DECIDED: VoteRefusal
WRONG_CURRENCY: VoteRefusal
INVALID_REQUEST: VoteRefusal
BALANCE_CEILING: VoteRefusal

class Leg(_message.Message):
    __slots__ = ("account", "delta_minor", "counterparty")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    DELTA_MINOR_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_FIELD_NUMBER: _ClassVar[int]
    account: str
    delta_minor: int
    counterparty: str
    def __init__(self, account: _Optional[str] = ..., delta_minor: _Optional[int] = ..., counterparty: _Optional[str] = ...) -> None: ...

class PrepareRequest(_message.Message):
    __slots__ = ("txn_id", "currency", "legs")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LEGS_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    currency: str
    legs: _containers.RepeatedCompositeFieldContainer[Leg]
    def __init__(self, txn_id: _Optional[str] = ..., currency: _Optional[str] = ..., legs: _Optional[_Iterable[_Union[Leg, _Mapping]]] = ...) -> None: ...

class PrepareReply(_message.Message):
    __slots__ = ("yes", "refusal", "detail")
    YES_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    yes: bool
    refusal: VoteRefusal
    detail: str
    def __init__(self, yes: _Optional[bool] = ..., refusal: _Optional[_Union[VoteRefusal, str]] = ..., detail: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("txn_id", "commit")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    commit: bool
    def __init__(self, txn_id: _Optional[str] = ..., commit: _Optional[bool] = ...) -> None: ...

class DecideAndPrepareRequest(_message.Message):
    __slots__ = ("decisions", "prepares")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    PREPARES_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    prepares: _containers.RepeatedCompositeFieldContainer[PrepareRequest]
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., prepares: _Optional[_Iterable[_Union[PrepareRequest, _Mapping]]] = ...) -> None: ...

class DecisionOutcome(_message.Message):
    __slots__ = ("applied", "known", "error")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    known: bool
    error: str
    def __init__(self, applied: _Optional[bool] = ..., known: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class DecideAndPrepareReply(_message.Message):
    __slots__ = ("outcomes", "votes")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[DecisionOutcome]
    votes: _containers.RepeatedCompositeFieldContainer[PrepareReply]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[DecisionOutcome, _Mapping]]] = ..., votes: _Optional[_Iterable[_Union[PrepareReply, _Mapping]]] = ...) -> None: ...

class DecisionRequest(_message.Message):
    __slots__ = ("txn_id",)
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    def __init__(self, txn_id: _Optional[str] = ...) -> None: ...

class DecisionReply(_message.Message):
    __slots__ = ("known",)
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    known: bool
    def __init__(self, known: _Optional[bool] = ...) -> None: ...

class OpenAccountRequest(_message.Message):
    __slots__ = ("account", "password", "initial")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    account: str
    password: str
    initial: _common_pb2.Money
    def __init__(self, account: _Optional[str] = ..., password: _Optional[str] = ..., initial: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class OpenAccountsRequest(_message.Message):
    __slots__ = ("accounts", "password_hash", "initial")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedScalarFieldContainer[str]
    password_hash: str
    initial: _common_pb2.Money
    def __init__(self, accounts: _Optional[_Iterable[str]] = ..., password_hash: _Optional[str] = ..., initial: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class BankDepositRequest(_message.Message):
    __slots__ = ("txn_id", "account", "amount")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    account: str
    amount: _common_pb2.Money
    def __init__(self, txn_id: _Optional[str] = ..., account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class OpenAccountsReply(_message.Message):
    __slots__ = ("opened",)
    OPENED_FIELD_NUMBER: _ClassVar[int]
    opened: int
    def __init__(self, opened: _Optional[int] = ...) -> None: ...

class VerifyPasswordRequest(_message.Message):
    __slots__ = ("account", "password")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    account: str
    password: str
    def __init__(self, account: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class VerifyPasswordReply(_message.Message):
    __slots__ = ("ok", "locked_for_s")
    OK_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FOR_S_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    locked_for_s: float
    def __init__(self, ok: _Optional[bool] = ..., locked_for_s: _Optional[float] = ...) -> None: ...

class AccountRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class AccountReply(_message.Message):
    __slots__ = ("account", "balance", "held")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    account: str
    balance: _common_pb2.Money
    held: _common_pb2.Money
    def __init__(self, account: _Optional[str] = ..., balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., held: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class BankHistoryRequest(_message.Message):
    __slots__ = ("account", "limit", "before")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    account: str
    limit: int
    before: str
    def __init__(self, account: _Optional[str] = ..., limit: _Optional[int] = ..., before: _Optional[str] = ...) -> None: ...

class BankHistoryReply(_message.Message):
    __slots__ = ("entries", "next_cursor")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.HistoryEntry]
    next_cursor: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_common_pb2.HistoryEntry, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AccountState(_message.Message):
    __slots__ = ("account", "balance_minor", "held_minor", "opening_minor")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MINOR_FIELD_NUMBER: _ClassVar[int]
    HELD_MINOR_FIELD_NUMBER: _ClassVar[int]
    OPENING_MINOR_FIELD_NUMBER: _ClassVar[int]
    account: str
    balance_minor: int
    held_minor: int
    opening_minor: int
    def __init__(self, account: _Optional[str] = ..., balance_minor: _Optional[int] = ..., held_minor: _Optional[int] = ..., opening_minor: _Optional[int] = ...) -> None: ...

class BankTxn(_message.Message):
    __slots__ = ("txn_id", "state", "legs")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LEGS_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    state: str
    legs: _containers.RepeatedCompositeFieldContainer[Leg]
    def __init__(self, txn_id: _Optional[str] = ..., state: _Optional[str] = ..., legs: _Optional[_Iterable[_Union[Leg, _Mapping]]] = ...) -> None: ...

class BankAuditChunk(_message.Message):
    __slots__ = ("accounts", "txns", "deposits_minor", "currency", "treasury_minor")
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    TXNS_FIELD_NUMBER: _ClassVar[int]
    DEPOSITS_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    TREASURY_MINOR_FIELD_NUMBER: _ClassVar[int]
    accounts: _containers.RepeatedCompositeFieldContainer[AccountState]
    txns: _containers.RepeatedCompositeFieldContainer[BankTxn]
    deposits_minor: int
    currency: str
    treasury_minor: int
    def __init__(self, accounts: _Optional[_Iterable[_Union[AccountState, _Mapping]]] = ..., txns: _Optional[_Iterable[_Union[BankTxn, _Mapping]]] = ..., deposits_minor: _Optional[int] = ..., currency: _Optional[str] = ..., treasury_minor: _Optional[int] = ...) -> None: ...
