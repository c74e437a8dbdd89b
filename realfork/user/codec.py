"""msgpack form of user programs, for reproducers.

Layout (version 1)::

    {"v": 1,
     "code": [[op, operand, ...], ...],
     "labels": {name: index, ...},
     "entry": index}

An operand is encoded by what its ``isa.OperandKind`` slot holds: an ``Imm``
as an integer; a ``Reg`` as its name; a ``LabelRef`` as the label name; a
``Disposition`` as its keyword.  Registers cannot be label names, so a string
in a value slot is always a register.  Source line numbers are not kept.

``from_msgpack`` trusts nothing: every failure is a ``ProgramError`` with a
one-line message starting with ``msgpack program:``.
"""

from __future__ import annotations

from typing import TypeGuard

import msgpack

from realfork.safeio import shorten
from realfork.user.isa import INSTRUCTIONS, Disposition, OperandKind, arity
from realfork.user.program import (
    MAX_INSTRUCTIONS,
    Imm,
    Instr,
    LabelRef,
    Operand,
    Program,
    ProgramError,
    Reg,
    takes,
)

VERSION = 1
MAX_BYTES = 1 << 20
"""Largest encoded program accepted, in bytes (1 MiB)."""

_FIELDS = ("v", "code", "labels", "entry")


def _error(message: str) -> ProgramError:
    # messages quote names from the input (cut by _q); the data model's own
    # messages, passed on, may quote a whole string: cut the line as well
    return ProgramError(shorten(f"msgpack program: {message}", 300))


def _q(value: object) -> str:
    """``repr`` of a decoded value, cut for a one-line message."""
    return shorten(repr(value), 60)


def _kind(value: object) -> str:
    """msgpack name of a decoded value's type, for messages."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "binary"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "map"
    return "extension"


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _encode_operand(arg: Operand) -> int | str:
    if isinstance(arg, Imm):
        return arg.value
    if isinstance(arg, Disposition):
        return arg.value
    return arg.name


def to_msgpack(p: Program) -> bytes:
    """Encode ``p``; raise ``ProgramError`` if the result exceeds ``MAX_BYTES``."""
    doc = {
        "v": VERSION,
        "code": [[ins.op, *map(_encode_operand, ins.args)] for ins in p.code],
        "labels": dict(p.labels),
        "entry": p.entry,
    }
    data = msgpack.packb(doc, use_bin_type=True)
    if len(data) > MAX_BYTES:
        raise _error(f"encoding is {len(data)} bytes; expected at most {MAX_BYTES}")
    return data


def from_msgpack(data: bytes) -> Program:
    """Decode and validate a program; raise ``ProgramError`` if it is bad."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _error(f"input is {type(data).__name__}; expected bytes")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    if size > MAX_BYTES:
        raise _error(f"input is {size} bytes; expected at most {MAX_BYTES}")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except msgpack.ExtraData:
        raise _error("extra bytes after the program") from None
    except (ValueError, TypeError, msgpack.UnpackException) as e:  # incl. UnicodeDecodeError
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "incomplete input" in detail:
            raise _error("truncated input (incomplete msgpack data)") from None
        raise _error(f"not valid msgpack ({detail})") from None
    return _decode(doc)


def _decode(doc: object) -> Program:
    if not isinstance(doc, dict):
        raise _error(f"top level is {_kind(doc)}; expected a map")
    if "v" not in doc:
        raise _error("missing field 'v'")
    version = doc["v"]
    if not _is_int(version):
        raise _error(f"field 'v' is {_kind(version)}; expected an integer")
    if version != VERSION:
        raise _error(f"unknown version {version}; expected {VERSION}")
    for key in doc:
        if key not in _FIELDS:
            raise _error(f"unknown field {_q(key)}; expected only {', '.join(_FIELDS)}")
    for key in _FIELDS:
        if key not in doc:
            raise _error(f"missing field {_q(key)}")

    code, labels, entry = doc["code"], doc["labels"], doc["entry"]
    if not isinstance(code, list):
        raise _error(f"field 'code' is {_kind(code)}; expected an array")
    if not isinstance(labels, dict):
        raise _error(f"field 'labels' is {_kind(labels)}; expected a map")
    if not _is_int(entry):
        raise _error(f"field 'entry' is {_kind(entry)}; expected an integer")
    if len(code) > MAX_INSTRUCTIONS:
        raise _error(f"{len(code)} instructions; expected at most {MAX_INSTRUCTIONS}")
    for name, index in labels.items():
        if not isinstance(name, str):
            raise _error(f"label name is {_kind(name)}; expected a string")
        if not _is_int(index):
            raise _error(f"label {_q(name)} is {_kind(index)}; expected an integer")

    seen: dict[tuple[OperandKind, int | str], Operand] = {}
    instrs = tuple(_decode_instr(i, item, seen) for i, item in enumerate(code))
    try:
        return Program(instrs, labels, entry)
    except ProgramError as e:
        raise _error(e.message) from None


def _decode_instr(
    i: int, item: object, seen: dict[tuple[OperandKind, int | str], Operand]
) -> Instr:
    """Decode instruction ``i``; ``seen`` caches decoded operands."""
    if not isinstance(item, list) or not item:
        raise _error(f"instruction {i} is {_kind(item)}; expected a non-empty array")
    op, *raw = item
    if not isinstance(op, str):
        raise _error(f"instruction {i}: name is {_kind(op)}; expected a string")
    if op not in INSTRUCTIONS:
        raise _error(f"instruction {i}: unknown instruction {_q(op)}")
    fewest, most = arity(op)
    if not fewest <= len(raw) <= most:
        raise _error(f"instruction {i}: {_q(op)} has {len(raw)} operand(s); it {takes(op)}")
    args: list[Operand] = []
    for n, (kind, value) in enumerate(zip(INSTRUCTIONS[op], raw, strict=False), 1):
        cacheable = type(value) is int or type(value) is str  # not bool or float
        if cacheable and (kind, value) in seen:
            args.append(seen[kind, value])
            continue
        try:
            arg = _decode_operand(kind, value)
        except ProgramError as e:
            raise _error(f"instruction {i} ({_q(op)}) operand {n}: {e.message}") from None
        if cacheable:
            seen[kind, value] = arg
        args.append(arg)
    return Instr(op, tuple(args))


def _decode_operand(kind: OperandKind, raw: object) -> Operand:
    if kind in (OperandKind.VALUE, OperandKind.SIGNAL):
        if _is_int(raw):
            return Imm(raw)
        if isinstance(raw, str):
            return Reg(raw)
        raise ProgramError(f"found {_kind(raw)}; expected an integer or a register name")
    if not isinstance(raw, str):
        raise ProgramError(f"found {_kind(raw)}; expected a string")
    if kind == OperandKind.DEST:
        return Reg(raw)
    if kind == OperandKind.LABEL:
        return LabelRef(raw)
    try:
        return Disposition(raw)
    except ValueError:
        raise ProgramError(
            f"unknown disposition {_q(raw)}; expected default, ignore or catch"
        ) from None
