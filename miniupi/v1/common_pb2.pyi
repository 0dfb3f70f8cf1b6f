from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class TxnState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TXN_STATE_UNSPECIFIED: _ClassVar[TxnState]
    INITIATED: _ClassVar[TxnState]
    COMMITTED: _ClassVar[TxnState]
    ABORTED: _ClassVar[TxnState]
TXN_STATE_UNSPECIFIED: TxnState
INITIATED: TxnState
COMMITTED: TxnState
ABORTED: TxnState

class Money(_message.Message):
    __slots__ = ("minor", "currency")
    MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    minor: int
    currency: str
    def __init__(self, minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class HistoryEntry(_message.Message):
    __slots__ = ("txn_id", "counterparty", "delta_minor", "currency", "applied_at", "refund_of", "refunds", "request_id")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_FIELD_NUMBER: _ClassVar[int]
    DELTA_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    REFUND_OF_FIELD_NUMBER: _ClassVar[int]
    REFUNDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    counterparty: str
    delta_minor: int
    currency: str
    applied_at: float
    refund_of: str
    refunds: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    def __init__(self, txn_id: _Optional[str] = ..., counterparty: _Optional[str] = ..., delta_minor: _Optional[int] = ..., currency: _Optional[str] = ..., applied_at: _Optional[float] = ..., refund_of: _Optional[str] = ..., refunds: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ...) -> None: ...
