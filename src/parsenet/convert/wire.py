"""A bounded reader of the protobuf wire format: the few things a ``.caffemodel`` needs.

A protobuf message is a sequence of fields, each a key (``field_number << 3 | wire_type``,
a varint) and a value: a varint (wire type 0), 8 bytes (1), a length-prefixed byte string
(2: strings, nested messages, packed numbers) or 4 bytes (5). That is the whole format
(https://protobuf.dev/programming-guides/encoding/); the meaning of each field number comes
from the ``.proto`` file (:mod:`parsenet.convert.caffe_proto`).

Every read is checked against the bytes that are really there: a length prefix larger than
the rest of its message, a varint longer than 10 bytes, a truncated fixed-width value or an
obsolete group wire type is a :class:`~parsenet.errors.WeightsError` naming the file and the
message path, never a memory blow-up (values are views into the file's bytes, nothing is
allocated from a length the file claims) and never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from parsenet.errors import WeightsError

__all__ = ["Field", "fields", "VARINT", "FIXED64", "BYTES", "FIXED32", "packed_floats",
           "packed_doubles", "packed_varints", "WIRE_NAMES"]

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5
WIRE_NAMES = {VARINT: "varint", FIXED64: "64-bit", BYTES: "length-delimited",
              FIXED32: "32-bit"}
_MAX_VARINT_BYTES = 10


class Field(NamedTuple):
    number: int
    wire_type: int
    value: int | memoryview  # an int for varints and fixed-width values, else the bytes


def _varint(buf: memoryview, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise WeightsError(f"{where}: truncated varint at byte {pos}")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + i + 1
        shift += 7
    raise WeightsError(f"{where}: varint longer than {_MAX_VARINT_BYTES} bytes at byte {pos}")


def fields(buf: memoryview, where: str) -> Iterator[Field]:
    """The fields of one message, in file order; ``where`` names it in errors."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WeightsError(f"{where}: field number 0 at byte {pos} (not a protobuf message)")
        if wire_type == VARINT:
            value, pos = _varint(buf, pos, where)
            yield Field(number, wire_type, value)
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            if pos + size > len(buf):
                raise WeightsError(f"{where}: field {number}: truncated {size}-byte value")
            yield Field(number, wire_type, int.from_bytes(buf[pos:pos + size], "little"))
            pos += size
        elif wire_type == BYTES:
            length, pos = _varint(buf, pos, where)
            if length > len(buf) - pos:
                raise WeightsError(f"{where}: field {number} claims {length} bytes, only "
                                   f"{len(buf) - pos} remain (truncated or corrupt file)")
            yield Field(number, wire_type, buf[pos:pos + length])
            pos += length
        else:
            raise WeightsError(f"{where}: field {number} has wire type {wire_type} (groups "
                               "or invalid), which no caffe.proto field uses")


def packed_floats(field: Field, where: str) -> np.ndarray:
    """A ``repeated float`` field's values: packed (one byte string) or a single float."""
    if field.wire_type == FIXED32:
        return np.array([field.value], dtype="<u4").view("<f4")
    if field.wire_type != BYTES or len(field.value) % 4:
        raise WeightsError(f"{where}: expected packed 32-bit floats, got "
                           f"{WIRE_NAMES.get(field.wire_type, field.wire_type)} of "
                           f"{len(field.value) if field.wire_type == BYTES else 0} bytes")
    return np.frombuffer(field.value, dtype="<f4")


def packed_doubles(field: Field, where: str) -> np.ndarray:
    """A ``repeated double`` field's values (packed or single)."""
    if field.wire_type == FIXED64:
        return np.array([field.value], dtype="<u8").view("<f8")
    if field.wire_type != BYTES or len(field.value) % 8:
        raise WeightsError(f"{where}: expected packed 64-bit doubles")
    return np.frombuffer(field.value, dtype="<f8")


def packed_varints(field: Field, where: str) -> list[int]:
    """A ``repeated int`` field's values: packed (one byte string) or a single varint."""
    if field.wire_type == VARINT:
        return [int(field.value)]
    if field.wire_type != BYTES:
        raise WeightsError(f"{where}: expected varints, got {WIRE_NAMES[field.wire_type]}")
    out, pos, buf = [], 0, field.value
    while pos < len(buf):
        value, pos = _varint(buf, pos, where)
        out.append(value)
    return out
