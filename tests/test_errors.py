"""The list of errors (miniupi/errors.py): one class per reason, each documented, and mapped back by reason alone."""
from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from miniupi.errors import (
    BY_CODE,
    BY_REASON,
    SENT_BY_NODES,
    FailedPrecondition,
    InsufficientFunds,
    MiniupiError,
    NoAnswer,
    NotFound,
    UnknownAccount,
    from_status,
)


def test_every_reason_a_node_sends_is_one_documented_class_under_a_real_status_code() -> None:
    assert len(BY_REASON) == len(SENT_BY_NODES)  # no two classes share a reason
    for cls in SENT_BY_NODES:
        assert cls.__doc__ and cls.__doc__.strip(), cls
        assert cls.reason.isupper() and " " not in cls.reason, cls
        assert grpc.StatusCode[cls.code] not in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN), cls
    assert NoAnswer not in SENT_BY_NODES  # the client's own name for a call without a status


@pytest.mark.parametrize("cls", SENT_BY_NODES, ids=lambda cls: cls.reason)
def test_a_status_comes_back_as_the_class_of_its_reason_whatever_its_message(cls: type[MiniupiError]) -> None:
    error = from_status(cls.code, "worded any way at all", cls.reason)
    assert type(error) is cls and error.message == "worded any way at all"


def test_the_message_never_decides_the_class() -> None:
    assert type(from_status("FAILED_PRECONDITION", "insufficient funds")) is FailedPrecondition
    assert type(from_status("FAILED_PRECONDITION", "no words to match", "INSUFFICIENT_FUNDS")) is InsufficientFunds


def test_an_unknown_reason_is_kept_on_the_class_of_its_code() -> None:
    error = from_status("NOT_FOUND", "no such wallet", "UNKNOWN_WALLET")  # from a newer node
    assert type(error) is NotFound and error.reason == "UNKNOWN_WALLET"


def test_a_reason_under_another_code_than_its_own_falls_back_to_the_code() -> None:
    error = from_status("INVALID_ARGUMENT", "odd", UnknownAccount.reason)
    assert type(error) is BY_CODE["INVALID_ARGUMENT"] and error.reason == UnknownAccount.reason


def test_the_readme_names_every_reason_a_node_sends() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert [cls.reason for cls in SENT_BY_NODES if f"`{cls.reason}`" not in readme] == []
