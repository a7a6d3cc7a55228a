"""The webhook signature, as the service makes it and as the consumers' helper (the file the
documentation tells subscribers to copy) checks it."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment.adapters.destinations.webhook import signature_header
from tests.support.webhook_verifier import InvalidSignature, verify_signature

SECRET = "whsec-test-0123456789"
BODY = '{"specversion":"1.0","id":"e1","data":{"amount":"199.99","note":"café"}}'.encode()
SENT_AT = 1_767_225_600


def test_a_signature_made_by_the_service_verifies_and_gives_its_time() -> None:
    header = signature_header(SECRET, BODY, SENT_AT)

    assert verify_signature(SECRET, header, BODY, now=SENT_AT + 10) == SENT_AT


def test_the_signature_is_hmac_sha256_over_the_timestamp_dot_body() -> None:
    """The recipe the documentation gives, computed independently of both helpers."""
    digest = hmac.new(SECRET.encode(), b"%d." % SENT_AT + BODY, hashlib.sha256).hexdigest()

    assert signature_header(SECRET, BODY, SENT_AT) == f"t={SENT_AT},v1={digest}"


def test_a_body_given_as_text_is_checked_as_its_utf8_bytes() -> None:
    header = signature_header(SECRET, BODY, SENT_AT)

    assert verify_signature(SECRET, header, BODY.decode(), now=SENT_AT) == SENT_AT


def test_a_changed_body_is_refused() -> None:
    header = signature_header(SECRET, BODY, SENT_AT)

    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify_signature(SECRET, header, BODY.replace(b"199.99", b"1.99"), now=SENT_AT)


def test_another_secret_is_refused() -> None:
    header = signature_header(SECRET, BODY, SENT_AT)

    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify_signature("another-secret", header, BODY, now=SENT_AT)


def test_a_timestamp_changed_after_signing_is_refused() -> None:
    """The timestamp is signed: moving it forward to pass the tolerance breaks the signature."""
    header = signature_header(SECRET, BODY, SENT_AT).replace(f"t={SENT_AT}", f"t={SENT_AT + 1}")

    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify_signature(SECRET, header, BODY, now=SENT_AT)


@pytest.mark.parametrize("age", [301, -301, 86_400])
def test_a_request_signed_too_long_ago_or_ahead_is_refused(age: int) -> None:
    header = signature_header(SECRET, BODY, SENT_AT)

    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_signature(SECRET, header, BODY, now=SENT_AT + age)


def test_the_tolerance_is_the_callers_choice() -> None:
    header = signature_header(SECRET, BODY, SENT_AT)

    assert verify_signature(SECRET, header, BODY, tolerance_seconds=3600, now=SENT_AT + 3000)
    with pytest.raises(InvalidSignature):
        verify_signature(SECRET, header, BODY, tolerance_seconds=10, now=SENT_AT + 11)


def test_one_matching_v1_among_several_is_enough() -> None:
    """During a rotation a sender may sign with the old and the new secret at once."""
    ours = signature_header(SECRET, BODY, SENT_AT).split(",")[1]
    header = f"t={SENT_AT},v1={'0' * 64},{ours},v0=ignored"

    assert verify_signature(SECRET, header, BODY, now=SENT_AT) == SENT_AT


def test_a_receiver_rotating_its_secret_accepts_either() -> None:
    old = signature_header("old-secret", BODY, SENT_AT)
    new = signature_header("new-secret", BODY, SENT_AT)

    assert verify_signature(["new-secret", "old-secret"], old, BODY, now=SENT_AT) == SENT_AT
    assert verify_signature(["new-secret", "old-secret"], new, BODY, now=SENT_AT) == SENT_AT
    with pytest.raises(InvalidSignature):
        verify_signature(["new-secret"], old, BODY, now=SENT_AT)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "no Payment-Signature"),
        ("", "no Payment-Signature"),
        ("garbage", "malformed"),
        ("v1=" + "a" * 64, "no timestamp"),
        (f"t={SENT_AT}", "no v1"),
        (f"t=soon,v1={'a' * 64}", "malformed"),
        (f"t=-5,v1={'a' * 64}", "malformed"),
        (f"t={SENT_AT},t={SENT_AT},v1={'a' * 64}", "malformed"),
    ],
)
def test_a_missing_or_malformed_header_is_refused(header: str | None, reason: str) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        verify_signature(SECRET, header, BODY, now=SENT_AT)


@pytest.mark.parametrize("secret", ["", b"", []])
def test_an_empty_secret_is_a_mistake_not_a_refusal(secret: str | bytes | list[str]) -> None:
    header = signature_header(SECRET, BODY, SENT_AT)

    with pytest.raises(ValueError, match="must not be empty") as raised:
        verify_signature(secret, header, BODY, now=SENT_AT)
    assert not isinstance(raised.value, InvalidSignature)


@given(
    body=st.binary(min_size=1, max_size=512),
    secret=st.text(min_size=1, max_size=40),
    flip=st.integers(min_value=0),
)
def test_any_body_verifies_and_any_changed_byte_is_refused(
    body: bytes, secret: str, flip: int
) -> None:
    header = signature_header(secret, body, SENT_AT)
    assert verify_signature(secret, header, body, now=SENT_AT) == SENT_AT

    position = flip % len(body)
    changed = body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]
    with pytest.raises(InvalidSignature):
        verify_signature(secret, header, changed, now=SENT_AT)
