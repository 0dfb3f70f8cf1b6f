from miniupi.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("account", "password", "initial")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    account: str
    password: str
    initial: _common_pb2.Money
    def __init__(self, account: _Optional[str] = ..., password: _Optional[str] = ..., initial: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("account", "balance")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    account: str
    balance: _common_pb2.Money
    def __init__(self, account: _Optional[str] = ..., balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("account", "password")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    account: str
    password: str
    def __init__(self, account: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class LoginReply(_message.Message):
    __slots__ = ("session_key", "expires_at")
    SESSION_KEY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    session_key: str
    expires_at: float
    def __init__(self, session_key: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class LogoutRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LogoutReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BalanceRequest(_message.Message):
    __slots__ = ("account",)
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    account: str
    def __init__(self, account: _Optional[str] = ...) -> None: ...

class BalanceReply(_message.Message):
    __slots__ = ("account", "balance", "available")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    account: str
    balance: _common_pb2.Money
    available: _common_pb2.Money
    def __init__(self, account: _Optional[str] = ..., balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., available: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("account", "limit")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    account: str
    limit: int
    def __init__(self, account: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryReply(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.HistoryEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[_common_pb2.HistoryEntry, _Mapping]]] = ...) -> None: ...

class PayRequest(_message.Message):
    __slots__ = ("txn_id", "from_account", "to_account", "amount")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    from_account: str
    to_account: str
    amount: _common_pb2.Money
    def __init__(self, txn_id: _Optional[str] = ..., from_account: _Optional[str] = ..., to_account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class PayReply(_message.Message):
    __slots__ = ("txn_id", "state")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    state: _common_pb2.TxnState
    def __init__(self, txn_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.TxnState, str]] = ...) -> None: ...

class GetDecisionRequest(_message.Message):
    __slots__ = ("txn_id",)
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    def __init__(self, txn_id: _Optional[str] = ...) -> None: ...

class GetDecisionReply(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: _common_pb2.TxnState
    def __init__(self, state: _Optional[_Union[_common_pb2.TxnState, str]] = ...) -> None: ...

class ListTransactionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GatewayTxn(_message.Message):
    __slots__ = ("txn_id", "from_account", "to_account", "amount", "state", "acknowledged", "refusal_code")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_CODE_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    from_account: str
    to_account: str
    amount: _common_pb2.Money
    state: _common_pb2.TxnState
    acknowledged: bool
    refusal_code: str
    def __init__(self, txn_id: _Optional[str] = ..., from_account: _Optional[str] = ..., to_account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.TxnState, str]] = ..., acknowledged: _Optional[bool] = ..., refusal_code: _Optional[str] = ...) -> None: ...

class TransactionChunk(_message.Message):
    __slots__ = ("txns",)
    TXNS_FIELD_NUMBER: _ClassVar[int]
    txns: _containers.RepeatedCompositeFieldContainer[GatewayTxn]
    def __init__(self, txns: _Optional[_Iterable[_Union[GatewayTxn, _Mapping]]] = ...) -> None: ...

class DepositRequest(_message.Message):
    __slots__ = ("txn_id", "account", "amount")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    account: str
    amount: _common_pb2.Money
    def __init__(self, txn_id: _Optional[str] = ..., account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class DepositReply(_message.Message):
    __slots__ = ("txn_id", "balance")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    balance: _common_pb2.Money
    def __init__(self, txn_id: _Optional[str] = ..., balance: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class BulkOpenRequest(_message.Message):
    __slots__ = ("bank", "accounts", "password_hash", "initial")
    BANK_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    bank: str
    accounts: _containers.RepeatedScalarFieldContainer[str]
    password_hash: str
    initial: _common_pb2.Money
    def __init__(self, bank: _Optional[str] = ..., accounts: _Optional[_Iterable[str]] = ..., password_hash: _Optional[str] = ..., initial: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class BulkOpenReply(_message.Message):
    __slots__ = ("opened",)
    OPENED_FIELD_NUMBER: _ClassVar[int]
    opened: int
    def __init__(self, opened: _Optional[int] = ...) -> None: ...
