"""``bridge.b64`` against the standard library: the same bytes out, the same inputs refused,
but for one: padding after a whole group ("AAAA="), which CPython's strict mode lets
through and RFC 4648 does not allow."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge import b64

# Text made mostly of base64's own characters, so that near misses (padding in the wrong
# place, a stray space or newline, the URL-safe alphabet) come up often.
NEAR_BASE64 = st.text(
    alphabet=st.sampled_from(
        "ABCXYZabcxyz0189+/=-_ \n\x00é" + "".join(chr(c) for c in range(0x61, 0x7B))
    ),
    max_size=24,
)


def _stdlib(text: str | bytes) -> bytes | None:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError:
        return None


def _ours(text: str | bytes) -> bytes | None:
    try:
        return b64.decode(text)
    except ValueError:
        return None


@given(st.one_of(NEAR_BASE64, st.text(max_size=16), st.binary(max_size=16)))
@example("YQ==")
@example("YQ")
@example("YQ==YQ==")
@example("=YQ=")
@example("YQ==\n")
@example("Y===")
@example("é")
@example("")
@example("AAAA=")
@example("AAAA==")
def test_decode_accepts_and_refuses_what_strict_binascii_does(text: str | bytes) -> None:
    ours, stdlib = _ours(text), _stdlib(text)
    if ours is None and stdlib is not None:
        raw = text if isinstance(text, bytes) else text.encode("ascii")
        data = raw.rstrip(b"=")
        assert data != raw and len(data) % 4 == 0, "refused valid base64"
    else:
        assert ours == stdlib


@given(st.binary(max_size=3000))
def test_encode_is_standard_padded_base64(data: bytes) -> None:
    text = b64.encode(data)
    assert text == base64.b64encode(data).decode("ascii")
    assert b64.decode(text) == data


def test_decode_raises_value_error() -> None:
    with pytest.raises(ValueError):
        b64.decode("YQ")
    with pytest.raises(ValueError):
        b64.decode("é")
