"""msgpack form of user programs: round trips and every rejection."""

from __future__ import annotations

import datetime

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realfork.kernel.signal_defs import SIGNAL_NAMES
from realfork.user import Program, ProgramError, format_program, from_msgpack, parse, to_msgpack
from realfork.user.codec import MAX_BYTES, VERSION
from realfork.user.isa import (
    IMM_MAX,
    IMM_MIN,
    INSTRUCTIONS,
    REGISTERS,
    Disposition,
    OperandKind,
    arity,
)
from realfork.user.program import MAX_INSTRUCTIONS, Imm, Instr, LabelRef, Reg, reserved_name

pytestmark = pytest.mark.timeout(30)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EVERY_INSTRUCTION = """
; one of each instruction, with each operand form
main:   fork1
        forkall
        vfork
        exit 0
        exit st
        exec child
        wait
        wait -1
        wait r1
        getpid
        getppid
        lwp_create child
        lwp_exit
        lwp_self
        lwp_suspend r1
        lwp_continue 2
        lwp_wait 0
        sleep 10
        spin r2
        yield
        nop
        kill rv, SIGKILL
        kill 3, r4
        kill -1, 0
        sigaction SIGCHLD, default
        sigaction 2, ignore
        sigaction r5, catch
        sigmask SIGUSR1, 1
        setuid 100
        load err, 0x1000
        store r6, -7
        mov st, EAGAIN
        add r7, r0
        sub rv, 9223372036854775807
        jmp child
        beq err, EINTR, main
        bne r0, r1, child
        blt -9223372036854775808, 0, end
        prlock r1, 50
        pragent r1
        prfork r1, 1
        prstopfork 4, 0
        prrun r1
        dtrace_helper
        usdt_enable r1, 0
        shmat
        coreadm r1, 5
        zone_create
child:  exit 1
end:
"""


def doc(**fields: object) -> dict[str, object]:
    """A valid encoded document, with ``fields`` replaced (None deletes)."""
    base: dict[str, object] = {
        "v": 1,
        "code": [["mov", "r0", 3], ["bne", "r0", 0, "loop"]],
        "labels": {"loop": 1},
        "entry": 0,
    }
    for key, value in fields.items():
        if value is None:
            base.pop(key)
        else:
            base[key] = value
    return base


def decode_error(data: object) -> ProgramError:
    """The one-line ``ProgramError`` that decoding ``data`` raises."""
    with pytest.raises(ProgramError) as info:
        from_msgpack(data)  # type: ignore[arg-type]
    e = info.value
    assert str(e).startswith("msgpack program: ")
    assert "\n" not in str(e)
    assert e.line is None
    return e


# ---------------------------------------------------------------- round trips


def test_every_instruction_round_trips() -> None:
    p = parse(EVERY_INSTRUCTION)
    assert {i.op for i in p.code} == set(INSTRUCTIONS)
    data = to_msgpack(p)
    assert isinstance(data, bytes)
    q = from_msgpack(data)
    assert q == p
    assert q.entry == p.entry == 0
    assert q.labels == p.labels
    assert all(i.line == 0 for i in q.code)  # source lines are not kept
    assert to_msgpack(q) == data
    assert parse(format_program(q)) == p


def test_layout_is_the_documented_one() -> None:
    p = parse("child: exit 7\nmain: sigaction SIGINT, catch\nkill r1, 9\nwait\nbeq rv, 0, child\n")
    assert msgpack.unpackb(to_msgpack(p)) == {
        "v": VERSION,
        "code": [
            ["exit", 7],
            ["sigaction", 2, "catch"],
            ["kill", "r1", 9],
            ["wait"],
            ["beq", "rv", 0, "child"],
        ],
        "labels": {"child": 0, "main": 1},
        "entry": 1,
    }


def test_hand_written_document_decodes() -> None:
    assert from_msgpack(msgpack.packb(doc())) == Program(
        (
            Instr("mov", (Reg("r0"), Imm(3))),
            Instr("bne", (Reg("r0"), Imm(0), LabelRef("loop"))),
        ),
        {"loop": 1},
        0,
    )


def test_accepts_bytes_like() -> None:
    data = to_msgpack(parse(EVERY_INSTRUCTION))
    p = from_msgpack(data)
    assert from_msgpack(bytearray(data)) == p
    assert from_msgpack(memoryview(data)) == p


def test_largest_program_round_trips() -> None:
    p = Program((Instr("nop"),) * MAX_INSTRUCTIONS, {"end": MAX_INSTRUCTIONS}, 0)
    assert from_msgpack(to_msgpack(p)) == p


LABEL_NAMES = st.from_regex(r"[a-z_.][a-z0-9_.]{0,6}", fullmatch=True).filter(
    lambda s: reserved_name(s) is None and s != "main"
)
IMMS = st.one_of(st.integers(-300, 300), st.integers(IMM_MIN, IMM_MAX))
REGS = st.sampled_from(REGISTERS).map(Reg)


@st.composite
def programs(draw: st.DrawFn) -> Program:
    n = draw(st.integers(1, 12))
    labels = draw(st.dictionaries(LABEL_NAMES, st.integers(0, n), max_size=4))
    if draw(st.booleans()):
        labels["main"] = draw(st.integers(0, n - 1))
    names = sorted(labels)
    ops = sorted(
        op for op, kinds in INSTRUCTIONS.items() if names or OperandKind.LABEL not in kinds
    )
    by_kind = {
        OperandKind.VALUE: st.one_of(REGS, IMMS.map(Imm)),
        OperandKind.SIGNAL: st.one_of(REGS, st.sampled_from(sorted(SIGNAL_NAMES)).map(Imm)),
        OperandKind.DEST: REGS,
        OperandKind.LABEL: st.sampled_from(names).map(LabelRef) if names else st.nothing(),
        OperandKind.DISPOSITION: st.sampled_from(Disposition),
    }
    code = []
    for _ in range(n):
        op = draw(st.sampled_from(ops))
        lo, hi = arity(op)
        count = draw(st.integers(lo, hi))
        code.append(Instr(op, tuple(draw(by_kind[k]) for k in INSTRUCTIONS[op][:count])))
    return Program(tuple(code), labels, labels.get("main", 0))


@FAST
@given(programs())
def test_round_trip_random(p: Program) -> None:
    assert from_msgpack(to_msgpack(p)) == p
    assert from_msgpack(to_msgpack(parse(format_program(p)))) == p


# ---------------------------------------------------------------- rejections

REJECTIONS: list[tuple[str, object, str]] = [
    # (test id, document to pack, exact message after "msgpack program: ")
    ("version-2", doc(v=2), "unknown version 2; expected 1"),
    ("version-0", doc(v=0), "unknown version 0; expected 1"),
    ("version-missing", doc(v=None), "missing field 'v'"),
    ("version-str", doc(v="1"), "field 'v' is string; expected an integer"),
    ("version-bool", doc(v=True), "field 'v' is boolean; expected an integer"),
    ("version-float", doc(v=1.0), "field 'v' is float; expected an integer"),
    ("top-array", [1, []], "top level is array; expected a map"),
    ("top-int", 1, "top level is integer; expected a map"),
    ("top-str", "v", "top level is string; expected a map"),
    ("top-nil", None, "top level is nil; expected a map"),
    ("top-bin", b"\x01", "top level is binary; expected a map"),
    ("unknown-field", doc(extra=1), "unknown field 'extra'; expected only v, code, labels, entry"),
    ("missing-code", doc(code=None), "missing field 'code'"),
    ("missing-labels", doc(labels=None), "missing field 'labels'"),
    ("missing-entry", doc(entry=None), "missing field 'entry'"),
    ("code-map", doc(code={"a": 1}), "field 'code' is map; expected an array"),
    ("code-str", doc(code="nop"), "field 'code' is string; expected an array"),
    ("labels-array", doc(labels=[]), "field 'labels' is array; expected a map"),
    ("entry-str", doc(entry="0"), "field 'entry' is string; expected an integer"),
    ("entry-bool", doc(entry=False), "field 'entry' is boolean; expected an integer"),
    ("entry-nil", doc(entry=[]), "field 'entry' is array; expected an integer"),
    ("label-index-str", doc(labels={"loop": "1"}), "label 'loop' is string; expected an integer"),
    (
        "label-index-bool",
        doc(labels={"loop": True}),
        "label 'loop' is boolean; expected an integer",
    ),
    ("label-name-bin", doc(labels={b"loop": 1}), "label name is binary; expected a string"),
    ("empty-code", doc(code=[], labels={}), "program has no instructions; expected at least one"),
    (
        "instr-not-array",
        doc(code=["nop"], labels={}),
        "instruction 0 is string; expected a non-empty array",
    ),
    (
        "instr-empty",
        doc(code=[["nop"], []], labels={}),
        "instruction 1 is array; expected a non-empty array",
    ),
    (
        "instr-name-int",
        doc(code=[[1]], labels={}),
        "instruction 0: name is integer; expected a string",
    ),
    ("unknown-op", doc(code=[["frok1"]], labels={}), "instruction 0: unknown instruction 'frok1'"),
    ("op-case", doc(code=[["NOP"]], labels={}), "instruction 0: unknown instruction 'NOP'"),
    (
        "too-few",
        doc(code=[["kill", 1]], labels={}),
        "instruction 0: 'kill' has 1 operand(s); it takes 2 operands",
    ),
    (
        "too-many",
        doc(code=[["nop", 1]], labels={}),
        "instruction 0: 'nop' has 1 operand(s); it takes no operands",
    ),
    (
        "wait-two",
        doc(code=[["wait", 1, 2]], labels={}),
        "instruction 0: 'wait' has 2 operand(s); it takes 0 or 1 operand",
    ),
    (
        "value-float",
        doc(code=[["exit", 1.5]], labels={}),
        "instruction 0 ('exit') operand 1: found float; expected an integer or a register name",
    ),
    (
        "value-bool",
        doc(code=[["exit", True]], labels={}),
        "instruction 0 ('exit') operand 1: found boolean; expected an integer or a register name",
    ),
    (
        "value-nil",
        doc(code=[["sleep", None]], labels={}),
        "instruction 0 ('sleep') operand 1: found nil; expected an integer or a register name",
    ),
    (
        "value-array",
        doc(code=[["kill", 1, [9]]], labels={}),
        "instruction 0 ('kill') operand 2: found array; expected an integer or a register name",
    ),
    (
        "value-bin",
        doc(code=[["exit", b"r0"]], labels={}),
        "instruction 0 ('exit') operand 1: found binary; expected an integer or a register name",
    ),
    (
        "unknown-register",
        doc(code=[["exit", "r9"]], labels={}),
        "instruction 0 ('exit') operand 1: unknown register 'r9'; "
        "expected a register r0..r7, rv, err or st",
    ),
    (
        "signal-name-as-string",
        doc(code=[["kill", 1, "SIGKILL"]], labels={}),
        "instruction 0 ('kill') operand 2: unknown register 'SIGKILL'; "
        "expected a register r0..r7, rv, err or st",
    ),
    (
        "dest-int",
        doc(code=[["mov", 0, 1]], labels={}),
        "instruction 0 ('mov') operand 1: found integer; expected a string",
    ),
    (
        "dest-unknown",
        doc(code=[["load", "pc", 1]], labels={}),
        "instruction 0 ('load') operand 1: unknown register 'pc'; "
        "expected a register r0..r7, rv, err or st",
    ),
    (
        "imm-too-big",
        doc(code=[["exit", 2**63]], labels={}),
        "instruction 0 ('exit') operand 1: integer 9223372036854775808 out of range; "
        "expected -9223372036854775808..9223372036854775807",
    ),
    (
        "label-int",
        doc(code=[["jmp", 0]], labels={}),
        "instruction 0 ('jmp') operand 1: found integer; expected a string",
    ),
    (
        "label-bad-name",
        doc(code=[["jmp", "a b"]], labels={"a b": 0}),
        "instruction 0 ('jmp') operand 1: bad label name 'a b'; "
        "expected a letter, '_' or '.' followed by letters, digits, '_' or '.'",
    ),
    (
        "label-register-name",
        doc(code=[["nop"]], labels={"r0": 0}),
        "label 'r0' is a register name; expected another name",
    ),
    (
        "label-undefined",
        doc(code=[["nop"], ["jmp", "x"]], labels={}),
        "instruction 1 ('jmp'): undefined label 'x'",
    ),
    (
        "disposition-unknown",
        doc(code=[["sigaction", 2, "hold"]], labels={}),
        "instruction 0 ('sigaction') operand 2: unknown disposition 'hold'; "
        "expected default, ignore or catch",
    ),
    (
        "disposition-int",
        doc(code=[["sigaction", 2, 0]], labels={}),
        "instruction 0 ('sigaction') operand 2: found integer; expected a string",
    ),
    ("label-index-high", doc(labels={"loop": 3}), "label 'loop' at 3 out of range; expected 0..2"),
    (
        "label-index-negative",
        doc(labels={"loop": -1}),
        "label 'loop' at -1 out of range; expected 0..2",
    ),
    ("entry-high", doc(entry=2), "entry 2 out of range; expected 0..1"),
    ("entry-negative", doc(entry=-1), "entry -1 out of range; expected 0..1"),
    (
        "entry-not-main",
        doc(labels={"loop": 1, "main": 1}),
        "entry is 0 but label 'main' is at 1; expected 1",
    ),
    ("entry-without-main", doc(entry=1), "entry is 1 without a 'main' label; expected 0"),
    (
        "too-many-instructions",
        doc(code=[["nop"]] * (MAX_INSTRUCTIONS + 1), labels={}),
        f"{MAX_INSTRUCTIONS + 1} instructions; expected at most {MAX_INSTRUCTIONS}",
    ),
]


@pytest.mark.parametrize(
    ("document", "message"),
    [pytest.param(d, m, id=i) for i, d, m in REJECTIONS],
)
def test_rejections(document: object, message: str) -> None:
    assert decode_error(msgpack.packb(document)).message == f"msgpack program: {message}"


def test_rejects_non_string_map_key() -> None:
    raw = b"\x81\x01\x02"  # {1: 2}: msgpack refuses integer map keys here
    assert "not valid msgpack" in decode_error(raw).message


def test_rejects_extension_types() -> None:
    e = decode_error(msgpack.packb(msgpack.ExtType(5, b"xyz")))
    assert e.message == "msgpack program: top level is extension; expected a map"
    stamp = msgpack.Timestamp.from_datetime(datetime.datetime.now(datetime.UTC))
    e = decode_error(msgpack.packb(doc(code=[["exit", stamp]], labels={}), datetime=False))
    assert "found extension" in e.message


def test_rejects_oversized_input() -> None:
    big = msgpack.packb(doc(pad="x" * MAX_BYTES))
    e = decode_error(big)
    assert e.message == f"msgpack program: input is {len(big)} bytes; expected at most {MAX_BYTES}"
    assert "input is" in decode_error(b"\xc1" * (MAX_BYTES + 1)).message


def test_refuses_to_encode_oversized_program() -> None:
    huge = Instr("mov", (Reg("r0"), Imm(IMM_MAX)))  # 17 bytes encoded
    p = Program((huge,) * MAX_INSTRUCTIONS, {}, 0)
    with pytest.raises(
        ProgramError, match=f"^msgpack program: encoding is .* bytes; expected at most {MAX_BYTES}$"
    ):
        to_msgpack(p)


def test_rejects_non_bytes() -> None:
    assert decode_error("abc").message == "msgpack program: input is str; expected bytes"


def test_rejects_every_truncation() -> None:
    data = to_msgpack(parse(EVERY_INSTRUCTION))
    for end in range(len(data)):
        decode_error(data[:end])
    assert decode_error(data[:-1]).message == (
        "msgpack program: truncated input (incomplete msgpack data)"
    )
    assert decode_error(b"").message == "msgpack program: truncated input (incomplete msgpack data)"


def test_rejects_trailing_bytes() -> None:
    data = to_msgpack(parse("nop"))
    assert decode_error(data + b"\x00").message == "msgpack program: extra bytes after the program"


def test_rejects_invalid_msgpack() -> None:
    assert decode_error(b"\xc1").message.startswith("msgpack program: not valid msgpack")
    # a string that is not UTF-8
    assert "not valid msgpack" in decode_error(b"\xa2\xff\xfe").message
    # nesting deeper than the unpacker allows
    assert "not valid msgpack" in decode_error(b"\x91" * 5000 + b"\xc0").message


def only_program_errors(data: bytes) -> None:
    """Decoding ``data`` either succeeds or raises a one-line ProgramError."""
    try:
        from_msgpack(data)
    except ProgramError as e:
        message = str(e)
    else:
        return
    assert message.startswith("msgpack program: ")
    assert "\n" not in message


@FAST
@given(st.binary(max_size=200))
def test_random_garbage(data: bytes) -> None:
    only_program_errors(data)


@FAST
@given(st.data())
def test_corrupted_encodings(data: st.DataObject) -> None:
    raw = bytearray(to_msgpack(data.draw(programs())))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    only_program_errors(bytes(raw))


@FAST
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_random_documents(value: object) -> None:
    try:
        raw = msgpack.packb({"v": 1, "code": [["exit", value]], "labels": {}, "entry": 0})
        raw2 = msgpack.packb(value)
    except (OverflowError, ValueError):  # not representable in msgpack
        return
    only_program_errors(raw)
    only_program_errors(raw2)
