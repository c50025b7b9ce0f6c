"""JSON read as an application reads it: integers exact, whatever their size.

orjson reads an integer outside ``-2**63 .. 2**64 - 1`` as a float, so
``18446744073709551617`` becomes ``1.8446744073709552e19``, which is ``2**64``: a
schema's ``maximum: 18446744073709551616`` would let it through, while the
application (Python's ``json``, Jackson's ``BigInteger``, Go's ``json.Number``)
reads a number above it. :func:`loads` keeps orjson as the judge of what is JSON
(it refuses lone surrogates, ``NaN`` and other texts the standard library takes)
and reads the text again with the standard library, whose integers are exact, only
when it holds a run of 19 digits or more (two passes in C to find out): nearly no
body pays anything but that scan.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: Translation table: every ASCII digit to ``0``, every other byte to ``x``.
_DIGITS = bytes(48 if 48 <= b <= 57 else 120 for b in range(256))
#: The shortest run of digits that may be an integer orjson does not hold exactly.
_LONG_RUN = b"0" * 19

JSONDecodeError = orjson.JSONDecodeError


def has_long_digit_run(data: bytes) -> bool:
    """Whether ``data`` holds 19 or more digits in a row (an integer orjson might round)."""
    return len(data) >= 19 and _LONG_RUN in data.translate(_DIGITS)


def loads(data: bytes | str) -> Any:
    """The JSON value of ``data``, integers exact; ``orjson.JSONDecodeError`` if it is not JSON."""
    value = orjson.loads(data)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if not has_long_digit_run(raw):
        return value
    # orjson accepted the text: the standard library reads the same value, exactly.
    return json.loads(raw.decode())
