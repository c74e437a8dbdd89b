"""Text form of user programs: constants, ISA table, parser, formatter, model."""

from __future__ import annotations

import enum
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realfork.errors import BadInput
from realfork.kernel import errno_defs, signal_defs
from realfork.kernel.errno_defs import ERRNO, ERRNO_NAMES
from realfork.kernel.signal_defs import NSIG, SIGNAL_NAMES, SIGNALS
from realfork.user import Program, ProgramError, format_program, parse
from realfork.user.isa import (
    IMM_MAX,
    IMM_MIN,
    INSTRUCTIONS,
    MIN_OPERANDS,
    REG_INDEX,
    REGISTERS,
    Disposition,
    OperandKind,
    arity,
)
from realfork.user.parser import format_instr
from realfork.user.program import (
    MAX_INSTRUCTIONS,
    Imm,
    Instr,
    LabelRef,
    Reg,
    reserved_name,
)

pytestmark = pytest.mark.timeout(30)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one(text: str) -> Instr:
    """The first instruction of ``text``, parsed with labels L and M defined."""
    return parse(f"{text}\nL: nop\nM: nop\n").code[0]


def error(text: str) -> ProgramError:
    with pytest.raises(ProgramError) as info:
        parse(text)
    return info.value


# ---------------------------------------------------------------- constants


def test_errno_values_are_illumos() -> None:
    expected = {
        "EPERM": 1, "ENOENT": 2, "ESRCH": 3, "EINTR": 4, "EIO": 5, "E2BIG": 7,
        "ECHILD": 10, "EAGAIN": 11, "ENOMEM": 12, "EACCES": 13, "EFAULT": 14,
        "EBUSY": 16, "EEXIST": 17, "EINVAL": 22, "ENOSPC": 28, "EDEADLK": 45,
        "ENOLCK": 46, "ENOTSUP": 48, "ETIME": 62, "ENOSYS": 89, "ETIMEDOUT": 145,
    }  # fmt: skip
    for name, value in expected.items():
        assert ERRNO[name] == value
        assert getattr(errno_defs, name) == value
        assert ERRNO_NAMES[value] == name
    assert all(ERRNO[name] == n for n, name in ERRNO_NAMES.items())
    assert len(ERRNO_NAMES) == len(ERRNO)


def test_signal_values_are_illumos() -> None:
    names = (
        "SIGHUP SIGINT SIGQUIT SIGILL SIGTRAP SIGABRT SIGEMT SIGFPE SIGKILL SIGBUS "
        "SIGSEGV SIGSYS SIGPIPE SIGALRM SIGTERM SIGUSR1 SIGUSR2 SIGCHLD SIGPWR "
        "SIGWINCH SIGURG SIGPOLL SIGSTOP SIGTSTP SIGCONT SIGTTIN SIGTTOU"
    ).split()
    for number, name in enumerate(names, 1):
        assert SIGNALS[name] == number
        assert getattr(signal_defs, name) == number
        assert SIGNAL_NAMES[number] == name
    assert NSIG == 28
    assert sorted(SIGNAL_NAMES) == list(range(1, NSIG))
    assert SIGNALS["SIGCLD"] == signal_defs.SIGCLD == 18
    assert SIGNAL_NAMES[18] == "SIGCHLD"


# ---------------------------------------------------------------- ISA table


def test_isa_table() -> None:
    assert REGISTERS == (
        "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "rv", "err", "st",
    )  # fmt: skip
    assert [REG_INDEX[r] for r in REGISTERS] == list(range(len(REGISTERS)))
    assert set(INSTRUCTIONS) == set(SAMPLES)
    for op, kinds in INSTRUCTIONS.items():
        assert op.islower()
        assert all(isinstance(k, OperandKind) for k in kinds)
    assert arity("wait") == (0, 1)
    assert arity("kill") == (2, 2)
    assert arity("fork1") == (0, 0)
    assert set(MIN_OPERANDS) <= set(INSTRUCTIONS)
    assert INSTRUCTIONS["sigaction"] == (OperandKind.SIGNAL, OperandKind.DISPOSITION)
    assert INSTRUCTIONS["beq"] == (OperandKind.VALUE, OperandKind.VALUE, OperandKind.LABEL)
    assert INSTRUCTIONS["load"] == (OperandKind.DEST, OperandKind.VALUE)


# ---------------------------------------------------------------- instructions

# Every instruction with each of its operand forms: text -> (op, args).
SAMPLES: dict[str, list[tuple[str, tuple[object, ...]]]] = {
    "fork1": [("fork1", ())],
    "forkall": [("forkall", ())],
    "vfork": [("vfork", ())],
    "exit": [
        ("exit 0", (Imm(0),)),
        ("exit -1", (Imm(-1),)),
        ("exit 0xff", (Imm(255),)),
        ("exit st", (Reg("st"),)),
        ("exit EAGAIN", (Imm(11),)),
        ("exit SIGKILL", (Imm(9),)),
    ],
    "exec": [("exec L", (LabelRef("L"),))],
    "wait": [
        ("wait", ()),
        ("wait 0", (Imm(0),)),
        ("wait -1", (Imm(-1),)),
        ("wait rv", (Reg("rv"),)),
    ],
    "getpid": [("getpid", ())],
    "getppid": [("getppid", ())],
    "lwp_create": [("lwp_create M", (LabelRef("M"),))],
    "lwp_exit": [("lwp_exit", ())],
    "lwp_self": [("lwp_self", ())],
    "lwp_suspend": [("lwp_suspend r1", (Reg("r1"),)), ("lwp_suspend 2", (Imm(2),))],
    "lwp_continue": [("lwp_continue r1", (Reg("r1"),)), ("lwp_continue 2", (Imm(2),))],
    "lwp_wait": [("lwp_wait 0", (Imm(0),)), ("lwp_wait rv", (Reg("rv"),))],
    "sleep": [("sleep 10", (Imm(10),)), ("sleep r7", (Reg("r7"),))],
    "spin": [("spin 1000", (Imm(1000),)), ("spin r0", (Reg("r0"),))],
    "yield": [("yield", ())],
    "nop": [("nop", ())],
    "kill": [
        ("kill r1, SIGKILL", (Reg("r1"), Imm(9))),
        ("kill 5, 15", (Imm(5), Imm(15))),
        ("kill -1, r2", (Imm(-1), Reg("r2"))),
        ("kill rv, SIGCLD", (Reg("rv"), Imm(18))),
        ("kill 0, 0", (Imm(0), Imm(0))),
    ],
    "sigmask": [
        ("sigmask SIGUSR1, 1", (Imm(16), Imm(1))),
        ("sigmask r2, r3", (Reg("r2"), Reg("r3"))),
    ],
    "sigaction": [
        ("sigaction SIGINT, default", (Imm(2), Disposition.DEFAULT)),
        ("sigaction SIGCHLD, ignore", (Imm(18), Disposition.IGNORE)),
        ("sigaction 16, catch", (Imm(16), Disposition.CATCH)),
        ("sigaction r3, catch", (Reg("r3"), Disposition.CATCH)),
    ],
    "setuid": [("setuid 0", (Imm(0),)), ("setuid r4", (Reg("r4"),))],
    "load": [
        ("load r0, 0x100", (Reg("r0"), Imm(256))),
        ("load err, r1", (Reg("err"), Reg("r1"))),
    ],
    "store": [
        ("store 0x100, 42", (Imm(256), Imm(42))),
        ("store r1, rv", (Reg("r1"), Reg("rv"))),
    ],
    "mov": [
        ("mov r0, 1", (Reg("r0"), Imm(1))),
        ("mov rv, r7", (Reg("rv"), Reg("r7"))),
        ("mov err, EINTR", (Reg("err"), Imm(4))),
        ("mov st, SIGTERM", (Reg("st"), Imm(15))),
    ],
    "add": [("add r2, -3", (Reg("r2"), Imm(-3))), ("add r2, r3", (Reg("r2"), Reg("r3")))],
    "sub": [("sub r5, 0X1F", (Reg("r5"), Imm(31))), ("sub r5, r6", (Reg("r5"), Reg("r6")))],
    "jmp": [("jmp L", (LabelRef("L"),))],
    "beq": [
        ("beq r0, 0, L", (Reg("r0"), Imm(0), LabelRef("L"))),
        ("beq err, EINTR, M", (Reg("err"), Imm(4), LabelRef("M"))),
    ],
    "bne": [
        ("bne rv, r1, L", (Reg("rv"), Reg("r1"), LabelRef("L"))),
        ("bne 1, 2, M", (Imm(1), Imm(2), LabelRef("M"))),
    ],
    "blt": [("blt r0, 10, L", (Reg("r0"), Imm(10), LabelRef("L")))],
    "prlock": [("prlock r1, 50", (Reg("r1"), Imm(50)))],
    "pragent": [("pragent r1", (Reg("r1"),)), ("pragent 7", (Imm(7),))],
    "prfork": [("prfork r1, 1", (Reg("r1"), Imm(1))), ("prfork 3, r0", (Imm(3), Reg("r0")))],
    "prstopfork": [("prstopfork r1, 0", (Reg("r1"), Imm(0)))],
    "prrun": [("prrun r1", (Reg("r1"),))],
    "dtrace_helper": [("dtrace_helper", ())],
    "usdt_enable": [("usdt_enable r1, 1", (Reg("r1"), Imm(1))),
                    ("usdt_enable 3, r0", (Imm(3), Reg("r0")))],
    "shmat": [("shmat", ())],
    "coreadm": [("coreadm 0, 5", (Imm(0), Imm(5))), ("coreadm r1, r2", (Reg("r1"), Reg("r2")))],
    "zone_create": [("zone_create", ())],
}

ALL_SAMPLES = [(op, text, args) for op, cases in SAMPLES.items() for text, args in cases]


@pytest.mark.parametrize(("op", "text", "args"), ALL_SAMPLES)
def test_every_instruction_parses(op: str, text: str, args: tuple[object, ...]) -> None:
    ins = one(text)
    assert ins == Instr(op, args)
    assert ins.line == 1


@pytest.mark.parametrize(("op", "text", "args"), ALL_SAMPLES)
def test_every_instruction_round_trips(op: str, text: str, args: tuple[object, ...]) -> None:
    p = parse(f"{text}\nL: nop\nM: nop\n")
    assert parse(format_program(p)) == p
    assert format_program(parse(format_program(p))) == format_program(p)


def test_every_register() -> None:
    for name in REGISTERS:
        assert one(f"mov {name}, {name}") == Instr("mov", (Reg(name), Reg(name)))


def test_every_errno_and_signal_name() -> None:
    for name, number in ERRNO.items():
        assert one(f"mov r0, {name}").args[1] == Imm(number)
    for name, number in SIGNALS.items():
        assert one(f"mov r0, {name}").args[1] == Imm(number)
        assert one(f"kill 1, {name}").args[1] == Imm(number)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("-0", 0),
        ("007", 7),
        ("0x0", 0),
        ("0xDeadBeef", 0xDEADBEEF),
        ("-0x10", -16),
        ("9223372036854775807", IMM_MAX),
        ("-9223372036854775808", IMM_MIN),
        ("0x7fffffffffffffff", IMM_MAX),
    ],
)
def test_integers(text: str, value: int) -> None:
    assert one(f"mov r0, {text}").args[1] == Imm(value)


# ---------------------------------------------------------------- layout


def test_comments_blank_lines_and_whitespace() -> None:
    text = (
        "; a comment line\n"
        "# another, with: punctuation\n"
        "\n"
        "   \t\n"
        "\tmov r0, 1 ; trailing, comment: here\n"
        "add   r0 ,2# hash comment\r\n"
        "  L:  ; label then comment\n"
        "exit r0\r\n"
    )
    p = parse(text)
    assert p.code == (
        Instr("mov", (Reg("r0"), Imm(1))),
        Instr("add", (Reg("r0"), Imm(2))),
        Instr("exit", (Reg("r0"),)),
    )
    assert [i.line for i in p.code] == [5, 6, 8]
    assert p.labels == {"L": 2}


def test_labels_own_line_before_instruction_and_stacked() -> None:
    p = parse(
        "start:\n  mov r0, 3\nloop: sub r0, 1\na: b.c: _d: bne r0, 0, loop\n  jmp end\nend:\n"
    )
    assert p.labels == {"start": 0, "loop": 1, "a": 2, "b.c": 2, "_d": 2, "end": 4}
    assert p.entry == 0
    assert p.code[2] == Instr("bne", (Reg("r0"), Imm(0), LabelRef("loop")))
    assert p.code[3] == Instr("jmp", (LabelRef("end"),))


def test_forward_and_backward_references() -> None:
    p = parse("back: jmp fwd\nfwd: jmp back\n")
    assert p.code == (Instr("jmp", (LabelRef("fwd"),)), Instr("jmp", (LabelRef("back"),)))
    assert p.labels == {"back": 0, "fwd": 1}


def test_main_is_the_entry() -> None:
    p = parse("child: exit 1\nmain: fork1\nbeq rv, 0, child\nexit 0\n")
    assert p.entry == 1
    assert p.labels["main"] == 1
    assert parse("nop\nexit 0\n").entry == 0
    assert parse("main: nop\n").entry == 0


def test_label_may_share_a_name_with_an_instruction_or_keyword() -> None:
    p = parse("nop: nop\ndefault: jmp nop\njmp default\n")
    assert p.labels == {"nop": 0, "default": 1}
    assert p.code[1] == Instr("jmp", (LabelRef("nop"),))


# ---------------------------------------------------------------- errors

ERRORS: list[tuple[str, int, int, str]] = [
    # (source, line, column, exact message after "line L, column C: ")
    ("nop\nfrok1\n", 2, 1, "unknown instruction 'frok1'"),
    (
        "  FORK1",
        1,
        3,
        "unknown instruction 'FORK1'; expected 'fork1' (instruction names are lowercase)",
    ),
    (
        "nop\nnop\n  mov r9, 1",
        3,
        7,
        "unknown register 'r9'; expected a register r0..r7, rv, err or st",
    ),
    ("exit r10", 1, 6, "unknown register 'r10'; expected a register r0..r7, rv, err or st"),
    ("jmp r8\n", 1, 5, "unknown register 'r8'; expected a register r0..r7, rv, err or st"),
    ("nop\nnop\nnop\nnop\njmp      done", 5, 10, "undefined label 'done'"),
    ("beq r0, 1, nowhere", 1, 12, "undefined label 'nowhere'"),
    (
        "exit",
        1,
        5,
        "missing operand 1 of 'exit' (takes 1 operand); "
        "expected a value (register, integer, errno or signal name)",
    ),
    (
        "kill 1 ; no signal",
        1,
        7,
        "missing operand 2 of 'kill' (takes 2 operands); "
        "expected a signal (signal name, number or register)",
    ),
    (
        "beq r0, r1",
        1,
        11,
        "missing operand 3 of 'beq' (takes 3 operands); expected a label",
    ),
    (
        "getpid 5",
        1,
        8,
        "too many operands at '5'; expected end of line ('getpid' takes no operands)",
    ),
    ("exit 1, 2", 1, 7, "too many operands at ','; expected end of line ('exit' takes 1 operand)"),
    ("exit 1 2", 1, 8, "too many operands at '2'; expected end of line ('exit' takes 1 operand)"),
    (
        "wait 1, 2",
        1,
        7,
        "too many operands at ','; expected end of line ('wait' takes 0 or 1 operand)",
    ),
    ("exit 1,", 1, 7, "trailing comma; expected end of line"),
    ("kill 1, 9,  ", 1, 10, "trailing comma; expected end of line"),
    ("kill 1,", 1, 7, "trailing comma; expected a signal (signal name, number or register)"),
    ("wait ,", 1, 6, "trailing comma; expected a value (register, integer, errno or signal name)"),
    ("kill 1 9", 1, 8, "missing comma before '9'; expected ','"),
    ("beq r0 r1, L\nL: nop", 1, 8, "missing comma before 'r1'; expected ','"),
    ("kill 1,,9", 1, 8, "unexpected ','; expected a signal (signal name, number or register)"),
    ("exit ,1", 1, 6, "unexpected ','; expected a value (register, integer, errno or signal name)"),
    ("exit 1:", 1, 7, "unexpected ':'; expected end of line ('exit' takes 1 operand)"),
    (
        "mov r0, :",
        1,
        9,
        "unexpected ':'; expected a value (register, integer, errno or signal name)",
    ),
    (": nop", 1, 1, "unexpected ':'; expected an instruction or a label"),
    ("nop\n, nop", 2, 1, "unexpected ','; expected an instruction or a label"),
    ("x: 5", 1, 4, "unexpected '5'; expected an instruction or a label"),
    ("exit 0x", 1, 6, "bad integer '0x'; expected a decimal or 0x hexadecimal integer"),
    ("exit 12ab", 1, 6, "bad integer '12ab'; expected a decimal or 0x hexadecimal integer"),
    ("exit -", 1, 6, "bad integer '-'; expected a decimal or 0x hexadecimal integer"),
    ("exit +5", 1, 6, "bad integer '+5'; expected a decimal or 0x hexadecimal integer"),
    ("exit 0x1g", 1, 6, "bad integer '0x1g'; expected a decimal or 0x hexadecimal integer"),
    (
        "exit 9223372036854775808",
        1,
        6,
        "integer '9223372036854775808' out of range; "
        "expected -9223372036854775808..9223372036854775807",
    ),
    (
        "exit -0x8000000000000001",
        1,
        6,
        "integer '-0x8000000000000001' out of range; "
        "expected -9223372036854775808..9223372036854775807",
    ),
    ("exit a$b", 1, 7, "unexpected character '$'; expected a letter, digit, '_' or '.'"),
    ("nop\n\tmov r0, é", 2, 10, "unexpected character 'é'; expected a letter, digit, '_' or '.'"),
    (
        "L: nop\nmov r0, L",
        2,
        9,
        "label 'L' where a value is needed; "
        "expected a value (register, integer, errno or signal name)",
    ),
    (
        "kill 1, L\nL: nop",
        1,
        9,
        "label 'L' where a signal is needed; expected a signal (signal name, number or register)",
    ),
    (
        "mov 5, 1",
        1,
        5,
        "integer '5' where a register is needed; expected a register r0..r7, rv, err or st",
    ),
    (
        "load SIGKILL, 1",
        1,
        6,
        "signal name 'SIGKILL' where a register is needed; "
        "expected a register r0..r7, rv, err or st",
    ),
    (
        "L: add L, 1",
        1,
        8,
        "label 'L' where a register is needed; expected a register r0..r7, rv, err or st",
    ),
    (
        "mov foo, 1",
        1,
        5,
        "name 'foo' where a register is needed; expected a register r0..r7, rv, err or st",
    ),
    ("jmp r0", 1, 5, "register 'r0' where a label is needed; expected a label"),
    ("jmp 3", 1, 5, "integer '3' where a label is needed; expected a label"),
    ("jmp EINTR", 1, 5, "errno name 'EINTR' where a label is needed; expected a label"),
    ("exec SIGHUP", 1, 6, "signal name 'SIGHUP' where a label is needed; expected a label"),
    (
        "kill 1, EINTR",
        1,
        9,
        "errno name 'EINTR' where a signal is needed; "
        "expected a signal (signal name, number or register)",
    ),
    (
        "kill 1, SIGFOO",
        1,
        9,
        "unknown name 'SIGFOO'; expected a signal (signal name, number or register)",
    ),
    (
        "exit sigkill",
        1,
        6,
        "unknown name 'sigkill'; expected a value (register, integer, errno or signal name)",
    ),
    (
        "sigaction SIGINT, foo",
        1,
        19,
        "unknown disposition 'foo'; expected default, ignore or catch",
    ),
    (
        "sigaction SIGINT, DEFAULT",
        1,
        19,
        "unknown disposition 'DEFAULT'; expected default, ignore or catch",
    ),
    (
        "sigaction SIGINT, 0",
        1,
        19,
        "integer '0' where a disposition is needed; expected default, ignore or catch",
    ),
    ("loop: nop\n  loop: nop", 2, 3, "duplicate label 'loop' (first defined on line 1)"),
    ("a: a: nop", 1, 4, "duplicate label 'a' (first defined on line 1)"),
    ("r0: nop", 1, 1, "label 'r0' is a register name; expected another name"),
    ("nop\n st: nop", 2, 2, "label 'st' is a register name; expected another name"),
    ("r12: nop", 1, 1, "label 'r12' is a register name; expected another name"),
    ("EINTR: nop", 1, 1, "label 'EINTR' is an errno name; expected another name"),
    ("SIGKILL: nop", 1, 1, "label 'SIGKILL' is a signal name; expected another name"),
    ("", 1, 1, "no instructions; expected at least one instruction"),
    ("; only a comment\n\n", 1, 1, "no instructions; expected at least one instruction"),
    ("only: ; labels\nlabels:\n", 1, 1, "no instructions; expected at least one instruction"),
    ("nop\n  main:\n", 2, 3, "label 'main' marks no instruction; expected an instruction after it"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), ERRORS)
def test_errors(text: str, line: int, column: int, message: str) -> None:
    e = error(text)
    assert (e.line, e.column, e.message) == (line, column, message)
    assert str(e) == f"line {line}, column {column}: {message}"
    assert "\n" not in str(e)
    assert isinstance(e, BadInput)
    assert isinstance(e, ValueError)


def test_first_error_in_source_order_wins() -> None:
    e = error("jmp nowhere\nfrok1\n")
    assert (e.line, e.message) == (1, "undefined label 'nowhere'")
    e = error("exit $\nx: nop\nx: nop\n")
    assert e.line == 1


def test_reference_to_a_reserved_label_reports_the_definition_first() -> None:
    e = error("jmp r0\nr0: nop\n")
    assert e.line == 1
    assert e.message == "register 'r0' where a label is needed; expected a label"


def test_too_many_instructions() -> None:
    text = "nop\n" * MAX_INSTRUCTIONS
    assert len(parse(text).code) == MAX_INSTRUCTIONS
    e = error(text + "  exit 0\n")
    assert (e.line, e.column) == (MAX_INSTRUCTIONS + 1, 3)
    assert e.message == (
        f"instruction {MAX_INSTRUCTIONS + 1} is one too many; "
        f"expected at most {MAX_INSTRUCTIONS} instructions"
    )


def test_parse_rejects_bytes() -> None:
    with pytest.raises(ProgramError, match="program text is bytes; expected str"):
        parse(b"nop")  # type: ignore[arg-type]


# ---------------------------------------------------------------- formatter


def test_format_program_layout() -> None:
    p = parse(
        "child: exit 0x2A   ; the child\n"
        "main: sigaction SIGCLD, catch\n"
        "retry: fork1\n"
        "beq err, 11, retry\n"
        "bne rv, 0, parent\n"
        "jmp child\n"
        "parent: wait\n"
        "kill rv, 9\n"
        "kill rv, 99\n"
        "blt st, EINTR, done\n"
        "done:\n"
    )
    assert format_program(p) == (
        "child:\n"
        "    exit 42\n"
        "main:\n"
        "    sigaction SIGCHLD, catch\n"
        "retry:\n"
        "    fork1\n"
        "    beq err, EAGAIN, retry\n"
        "    bne rv, 0, parent\n"
        "    jmp child\n"
        "parent:\n"
        "    wait\n"
        "    kill rv, SIGKILL\n"
        "    kill rv, 99\n"
        "    blt st, 4, done\n"
        "done:\n"
    )
    assert parse(format_program(p)) == p


def test_format_instr() -> None:
    assert format_instr(Instr("beq", (Imm(4), Reg("err"), LabelRef("x")))) == "beq EINTR, err, x"
    assert format_instr(Instr("beq", (Reg("err"), Imm(0), LabelRef("x")))) == "beq err, 0, x"
    assert format_instr(Instr("mov", (Reg("err"), Imm(4)))) == "mov err, 4"
    assert format_instr(Instr("sigaction", (Reg("r1"), Disposition.IGNORE))) == (
        "sigaction r1, ignore"
    )
    assert format_instr(Instr("exit", (Imm(-5),))) == "exit -5"
    assert format_instr(Instr("wait")) == "wait"


# Random programs built from the ISA table (shared shape with test_user_codec).
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
        OperandKind.SIGNAL: st.one_of(
            REGS, IMMS.map(Imm), st.sampled_from(sorted(SIGNAL_NAMES)).map(Imm)
        ),
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
def test_format_round_trip_random(p: Program) -> None:
    text = format_program(p)
    assert parse(text) == p
    assert format_program(parse(text)) == text


# ---------------------------------------------------------------- data model


def test_operands_validate() -> None:
    with pytest.raises(ProgramError, match="unknown register 'r8'"):
        Reg("r8")
    assert Reg("st").index == REGISTERS.index("st")
    with pytest.raises(ProgramError, match="immediate is bool; expected an integer"):
        Imm(True)
    with pytest.raises(ProgramError, match="immediate is float"):
        Imm(1.0)  # type: ignore[arg-type]
    with pytest.raises(ProgramError, match="out of range"):
        Imm(IMM_MAX + 1)

    class Small(enum.IntEnum):
        ONE = 1

    imm = Imm(Small.ONE)
    assert type(imm.value) is int
    assert imm == Imm(1)
    with pytest.raises(ProgramError, match="label 'rv' is a register name"):
        LabelRef("rv")
    with pytest.raises(ProgramError, match="bad label name '9x'"):
        LabelRef("9x")


def test_instr_validates() -> None:
    with pytest.raises(ProgramError, match="unknown instruction 'frob'"):
        Instr("frob")
    with pytest.raises(ProgramError, match="'kill' has 1 operand; it takes 2 operands"):
        Instr("kill", (Imm(1),))
    with pytest.raises(ProgramError, match="'nop' has 1 operand; it takes no operands"):
        Instr("nop", (Imm(1),))
    with pytest.raises(
        ProgramError, match=r"operand 1 of 'mov' is Imm\(value=1\); expected a register"
    ):
        Instr("mov", (Imm(1), Imm(1)))
    with pytest.raises(ProgramError, match="operand 1 of 'jmp'"):
        Instr("jmp", (Reg("r0"),))
    with pytest.raises(ProgramError, match="operand 2 of 'sigaction'"):
        Instr("sigaction", (Imm(2), Imm(0)))
    with pytest.raises(ProgramError, match=r"^line 7: unknown instruction"):
        Instr("frob", (), 7)
    assert Instr("wait", [Imm(1)]).args == (Imm(1),)  # type: ignore[arg-type]


def test_instr_equality_ignores_line() -> None:
    assert Instr("nop", (), 3) == Instr("nop", (), 9)
    assert hash(Instr("exit", (Imm(1),), 3)) == hash(Instr("exit", (Imm(1),)))


def test_program_validates() -> None:
    nop = Instr("nop")
    with pytest.raises(ProgramError, match="program has no instructions"):
        Program((), {}, 0)
    with pytest.raises(ProgramError, match="undefined label 'x'"):
        Program((Instr("jmp", (LabelRef("x"),)),), {}, 0)
    with pytest.raises(ProgramError, match=r"label 'x' at 2 out of range; expected 0\.\.1"):
        Program((nop,), {"x": 2}, 0)
    with pytest.raises(ProgramError, match="label 'x' at -1 out of range"):
        Program((nop,), {"x": -1}, 0)
    with pytest.raises(ProgramError, match="label 'x' target is bool"):
        Program((nop,), {"x": True}, 0)
    with pytest.raises(ProgramError, match="label 'err' is a register name"):
        Program((nop,), {"err": 0}, 0)
    with pytest.raises(ProgramError, match=r"entry 1 out of range; expected 0\.\.0"):
        Program((nop,), {}, 1)
    with pytest.raises(ProgramError, match="entry is 0 but label 'main' is at 1; expected 1"):
        Program((nop, nop), {"main": 1}, 0)
    with pytest.raises(ProgramError, match="entry is 1 without a 'main' label; expected 0"):
        Program((nop, nop), {}, 1)
    with pytest.raises(ProgramError, match="code\\[0\\] is str; expected an Instr"):
        Program(("nop",), {}, 0)  # type: ignore[arg-type]
    with pytest.raises(ProgramError, match="program has 65537 instructions"):
        Program((nop,) * (MAX_INSTRUCTIONS + 1), {}, 0)
    assert Program([nop], {"end": 1}, 0).code == (nop,)  # type: ignore[arg-type]


def test_program_is_value_like() -> None:
    labels = {"a": 0}
    p = Program((Instr("jmp", (LabelRef("a"),)),), labels, 0)
    labels["b"] = 1  # the program keeps its own copy
    assert p.labels == {"a": 0}
    q = parse("a: jmp a")
    assert p == q
    assert hash(p) == hash(q)
    assert p != parse("a: jmp a\nb:")


def test_program_error_pickles() -> None:
    e = error("nop\n  frok1")
    f = pickle.loads(pickle.dumps(e))
    assert type(f) is ProgramError
    assert (f.line, f.column, f.message, str(f)) == (e.line, e.column, e.message, str(e))
