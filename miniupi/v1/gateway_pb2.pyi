from miniupi.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RequestState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REQUEST_STATE_UNSPECIFIED: _ClassVar[RequestState]
    REQUEST_PENDING: _ClassVar[RequestState]
    REQUEST_PAYING: _ClassVar[RequestState]
    REQUEST_PAID: _ClassVar[RequestState]
    REQUEST_FAILED: _ClassVar[RequestState]
    REQUEST_DECLINED: _ClassVar[RequestState]
    REQUEST_EXPIRED: _ClassVar[RequestState]
REQUEST_STATE_UNSPECIFIED: RequestState
REQUEST_PENDING: RequestState
REQUEST_PAYING: RequestState
REQUEST_PAID: RequestState
REQUEST_FAILED: RequestState
REQUEST_DECLINED: RequestState
REQUEST_EXPIRED: RequestState

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
    __slots__ = ("account", "limit", "before")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    account: str
    limit: int
    before: str
    def __init__(self, account: _Optional[str] = ..., limit: _Optional[int] = ..., before: _Optional[str] = ...) -> None: ...

class HistoryReply(_message.Message):
    __slots__ = ("entries", "next_cursor")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_common_pb2.HistoryEntry]
    next_cursor: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_common_pb2.HistoryEntry, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("txn_id", "from_account", "to_account", "amount", "state", "acknowledged", "refusal_code", "refund_of", "request_id", "created_at", "decided_at")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_CODE_FIELD_NUMBER: _ClassVar[int]
    REFUND_OF_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    from_account: str
    to_account: str
    amount: _common_pb2.Money
    state: _common_pb2.TxnState
    acknowledged: bool
    refusal_code: str
    refund_of: str
    request_id: str
    created_at: float
    decided_at: float
    def __init__(self, txn_id: _Optional[str] = ..., from_account: _Optional[str] = ..., to_account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.TxnState, str]] = ..., acknowledged: _Optional[bool] = ..., refusal_code: _Optional[str] = ..., refund_of: _Optional[str] = ..., request_id: _Optional[str] = ..., created_at: _Optional[float] = ..., decided_at: _Optional[float] = ...) -> None: ...

class TransactionChunk(_message.Message):
    __slots__ = ("txns", "requests")
    TXNS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    txns: _containers.RepeatedCompositeFieldContainer[GatewayTxn]
    requests: _containers.RepeatedCompositeFieldContainer[CollectRequest]
    def __init__(self, txns: _Optional[_Iterable[_Union[GatewayTxn, _Mapping]]] = ..., requests: _Optional[_Iterable[_Union[CollectRequest, _Mapping]]] = ...) -> None: ...

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

class GetTransactionRequest(_message.Message):
    __slots__ = ("txn_id",)
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    def __init__(self, txn_id: _Optional[str] = ...) -> None: ...

class RefundLink(_message.Message):
    __slots__ = ("txn_id", "amount", "state")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    amount: _common_pb2.Money
    state: _common_pb2.TxnState
    def __init__(self, txn_id: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.TxnState, str]] = ...) -> None: ...

class TransactionReply(_message.Message):
    __slots__ = ("txn_id", "from_account", "to_account", "amount", "state", "refusal_code", "refusal_reason", "refusal_message", "created_at", "decided_at", "refund_of", "refunds", "refunded", "request_id")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_CODE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_REASON_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    REFUND_OF_FIELD_NUMBER: _ClassVar[int]
    REFUNDS_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    from_account: str
    to_account: str
    amount: _common_pb2.Money
    state: _common_pb2.TxnState
    refusal_code: str
    refusal_reason: str
    refusal_message: str
    created_at: float
    decided_at: float
    refund_of: str
    refunds: _containers.RepeatedCompositeFieldContainer[RefundLink]
    refunded: _common_pb2.Money
    request_id: str
    def __init__(self, txn_id: _Optional[str] = ..., from_account: _Optional[str] = ..., to_account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.TxnState, str]] = ..., refusal_code: _Optional[str] = ..., refusal_reason: _Optional[str] = ..., refusal_message: _Optional[str] = ..., created_at: _Optional[float] = ..., decided_at: _Optional[float] = ..., refund_of: _Optional[str] = ..., refunds: _Optional[_Iterable[_Union[RefundLink, _Mapping]]] = ..., refunded: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RefundRequest(_message.Message):
    __slots__ = ("txn_id", "original_txn_id", "amount")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TXN_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    original_txn_id: str
    amount: _common_pb2.Money
    def __init__(self, txn_id: _Optional[str] = ..., original_txn_id: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class MoneyRequest(_message.Message):
    __slots__ = ("request_id", "from_account", "amount", "note", "expires_in_s")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    from_account: str
    amount: _common_pb2.Money
    note: str
    expires_in_s: int
    def __init__(self, request_id: _Optional[str] = ..., from_account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., note: _Optional[str] = ..., expires_in_s: _Optional[int] = ...) -> None: ...

class CollectRequest(_message.Message):
    __slots__ = ("request_id", "from_account", "to_account", "amount", "note", "created_at", "expires_at", "state", "refusal_message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    from_account: str
    to_account: str
    amount: _common_pb2.Money
    note: str
    created_at: float
    expires_at: float
    state: RequestState
    refusal_message: str
    def __init__(self, request_id: _Optional[str] = ..., from_account: _Optional[str] = ..., to_account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., note: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., state: _Optional[_Union[RequestState, str]] = ..., refusal_message: _Optional[str] = ...) -> None: ...

class ListRequestsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRequestsReply(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[CollectRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[CollectRequest, _Mapping]]] = ...) -> None: ...

class ApproveRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class DeclineRequestRequest(_message.Message):
    __slots__ = ("request_id",)
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    def __init__(self, request_id: _Optional[str] = ...) -> None: ...

class SettlementRequest(_message.Message):
    __slots__ = ("since", "until")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    since: float
    until: float
    def __init__(self, since: _Optional[float] = ..., until: _Optional[float] = ...) -> None: ...

class BankFlow(_message.Message):
    __slots__ = ("from_bank", "to_bank", "amount", "payments")
    FROM_BANK_FIELD_NUMBER: _ClassVar[int]
    TO_BANK_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    from_bank: str
    to_bank: str
    amount: _common_pb2.Money
    payments: int
    def __init__(self, from_bank: _Optional[str] = ..., to_bank: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., payments: _Optional[int] = ...) -> None: ...

class NetPosition(_message.Message):
    __slots__ = ("bank", "net")
    BANK_FIELD_NUMBER: _ClassVar[int]
    NET_FIELD_NUMBER: _ClassVar[int]
    bank: str
    net: _common_pb2.Money
    def __init__(self, bank: _Optional[str] = ..., net: _Optional[_Union[_common_pb2.Money, _Mapping]] = ...) -> None: ...

class SettlementReply(_message.Message):
    __slots__ = ("since", "until", "gross", "net", "intra_bank")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    GROSS_FIELD_NUMBER: _ClassVar[int]
    NET_FIELD_NUMBER: _ClassVar[int]
    INTRA_BANK_FIELD_NUMBER: _ClassVar[int]
    since: float
    until: float
    gross: _containers.RepeatedCompositeFieldContainer[BankFlow]
    net: _containers.RepeatedCompositeFieldContainer[NetPosition]
    intra_bank: _containers.RepeatedCompositeFieldContainer[BankFlow]
    def __init__(self, since: _Optional[float] = ..., until: _Optional[float] = ..., gross: _Optional[_Iterable[_Union[BankFlow, _Mapping]]] = ..., net: _Optional[_Iterable[_Union[NetPosition, _Mapping]]] = ..., intra_bank: _Optional[_Iterable[_Union[BankFlow, _Mapping]]] = ...) -> None: ...

class RecentPaymentsRequest(_message.Message):
    __slots__ = ("after", "limit")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after: int
    limit: int
    def __init__(self, after: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class PaymentStep(_message.Message):
    __slots__ = ("at", "step", "bank", "detail")
    AT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BANK_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    at: float
    step: str
    bank: str
    detail: str
    def __init__(self, at: _Optional[float] = ..., step: _Optional[str] = ..., bank: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class PaymentTrace(_message.Message):
    __slots__ = ("txn_id", "from_account", "to_account", "amount", "state", "reason", "kind", "created_at", "steps", "seq")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    TO_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    from_account: str
    to_account: str
    amount: _common_pb2.Money
    state: _common_pb2.TxnState
    reason: str
    kind: str
    created_at: float
    steps: _containers.RepeatedCompositeFieldContainer[PaymentStep]
    seq: int
    def __init__(self, txn_id: _Optional[str] = ..., from_account: _Optional[str] = ..., to_account: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.TxnState, str]] = ..., reason: _Optional[str] = ..., kind: _Optional[str] = ..., created_at: _Optional[float] = ..., steps: _Optional[_Iterable[_Union[PaymentStep, _Mapping]]] = ..., seq: _Optional[int] = ...) -> None: ...

class RecentPaymentsReply(_message.Message):
    __slots__ = ("payments", "seq", "gateway")
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[PaymentTrace]
    seq: int
    gateway: str
    def __init__(self, payments: _Optional[_Iterable[_Union[PaymentTrace, _Mapping]]] = ..., seq: _Optional[int] = ..., gateway: _Optional[str] = ...) -> None: ...
