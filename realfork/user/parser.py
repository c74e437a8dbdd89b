"""Text form of user programs: ``parse`` and ``format_program``.

Grammar, one line at a time (``;`` or ``#`` starts a comment)::

    line    := { NAME ":" } [ NAME [ operand { "," operand } ] ]
    operand := register | integer | errno name | signal name | label | keyword

Integers are decimal or ``0x`` hexadecimal, optionally negative, and must fit
a signed 64-bit word (the machine's registers, ``isa.IMM_MIN..IMM_MAX``).
Execution starts at ``main:`` if defined, else at the first instruction.
Every error is a ``ProgramError`` (a ``BadInput``) with the 1-based line and
column of the offending token; a token echoed in a message is cut to a few
dozen characters.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from realfork.kernel.errno_defs import ERRNO, ERRNO_NAMES
from realfork.kernel.signal_defs import SIGNAL_NAMES, SIGNALS
from realfork.user.isa import (
    IMM_MAX,
    IMM_MIN,
    INSTRUCTIONS,
    LABEL_RE,
    REG_INDEX,
    REGISTER_LIKE_RE,
    Disposition,
    OperandKind,
    arity,
)
from realfork.user.program import (
    MAX_INSTRUCTIONS,
    REG_WORDS,
    Imm,
    Instr,
    LabelRef,
    Operand,
    Program,
    ProgramError,
    Reg,
    check_label_name,
    reserved_name,
    takes,
)

_NAME, _INT, _COMMA, _COLON = "name", "int", ",", ":"

MAX_TEXT_BYTES = 8 << 20
"""Largest program text accepted (65,536 instructions of 128 characters)."""

# Digits of the widest literal that can fit a 64-bit word once leading zeros
# are dropped: 19 decimal (9223372036854775808), 16 hexadecimal.  A longer
# literal is out of range without being converted, so a 100,000-digit one
# costs nothing (and never meets Python's int() digit limit).
_MAX_DIGITS = {10: 19, 16: 16}

_TOKEN_RE = re.compile(r"[,:]|[^\s,:]+")
_INT_RE = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|[0-9]+)")
_NAME_CHAR_RE = re.compile(r"[A-Za-z0-9_.]")

_WANT: dict[OperandKind, str] = {
    OperandKind.VALUE: "a value (register, integer, errno or signal name)",
    OperandKind.DEST: REG_WORDS,
    OperandKind.SIGNAL: "a signal (signal name, number or register)",
    OperandKind.LABEL: "a label",
    OperandKind.DISPOSITION: "default, ignore or catch",
}

_NOUN: dict[OperandKind, str] = {
    OperandKind.VALUE: "a value",
    OperandKind.DEST: "a register",
    OperandKind.SIGNAL: "a signal",
    OperandKind.LABEL: "a label",
    OperandKind.DISPOSITION: "a disposition",
}


class _Tok(NamedTuple):
    kind: str  # _NAME, _INT, _COMMA or _COLON
    text: str
    col: int  # 1-based

    def shown(self) -> str:
        return _q(self.text)


def _q(text: str) -> str:
    """``repr`` of a token, cut to a length fit for a one-line message."""
    return repr(text) if len(text) <= 40 else repr(text[:30]) + f"... ({len(text):,} chars)"


def _tokens(text: str, line: int) -> list[_Tok]:
    """Split one line into tokens, dropping its comment."""
    for mark in ";#":
        cut = text.find(mark)
        if cut >= 0:
            text = text[:cut]
    toks: list[_Tok] = []
    for m in _TOKEN_RE.finditer(text):
        word, col = m.group(), m.start() + 1
        if word in ",:":
            toks.append(_Tok(word, word, col))
        elif word[0] in "0123456789-+":
            if not _INT_RE.fullmatch(word):
                raise ProgramError(
                    f"bad integer {_q(word)}; expected a decimal or 0x hexadecimal integer",
                    line,
                    col,
                )
            toks.append(_Tok(_INT, word, col))
        elif LABEL_RE.fullmatch(word):
            toks.append(_Tok(_NAME, word, col))
        else:
            bad = next(i for i, c in enumerate(word) if not _NAME_CHAR_RE.match(c))
            raise ProgramError(
                f"unexpected character {word[bad]!r}; expected a letter, digit, '_' or '.'",
                line,
                col + bad,
            )
    return toks


def _leading_labels(toks: list[_Tok]) -> int:
    """Number of tokens taken by the ``name:`` pairs that start a line."""
    i = 0
    while i + 1 < len(toks) and toks[i].kind == _NAME and toks[i + 1].kind == _COLON:
        i += 2
    return i


class _Parser:
    def __init__(self, lines: list[list[_Tok] | ProgramError]) -> None:
        self.lines = lines
        self.label_names = {  # every label, so forward references resolve
            t.text
            for toks in lines
            if not isinstance(toks, ProgramError)
            for t in toks[: _leading_labels(toks) : 2]
            if reserved_name(t.text) is None
        }
        self.code: list[Instr] = []
        self.labels: dict[str, int] = {}
        self.where: dict[str, tuple[int, int]] = {}  # label -> (line, column)
        self.seen: dict[tuple[OperandKind, str], Operand] = {}  # parsed operands

    def line(self, n: int) -> None:
        toks = self.lines[n - 1]
        if isinstance(toks, ProgramError):
            raise toks
        i = _leading_labels(toks)
        for t in toks[:i:2]:
            self.define(t, n)
        if i == len(toks):
            return
        t = toks[i]
        if t.kind != _NAME:
            raise ProgramError(
                f"unexpected {t.shown()}; expected an instruction or a label", n, t.col
            )
        op = t.text
        if op not in INSTRUCTIONS:
            if op.lower() in INSTRUCTIONS:
                raise ProgramError(
                    f"unknown instruction {_q(op)}; expected {_q(op.lower())} "
                    "(instruction names are lowercase)",
                    n,
                    t.col,
                )
            raise ProgramError(f"unknown instruction {_q(op)}", n, t.col)
        if len(self.code) == MAX_INSTRUCTIONS:
            raise ProgramError(
                f"instruction {MAX_INSTRUCTIONS + 1} is one too many; "
                f"expected at most {MAX_INSTRUCTIONS} instructions",
                n,
                t.col,
            )
        end = toks[-1].col + len(toks[-1].text)
        args = self.operands(op, toks[i + 1 :], n, end)
        self.code.append(Instr(op, args, n))

    def define(self, t: _Tok, n: int) -> None:
        name = t.text
        if name in self.labels:
            first = self.where[name][0]
            raise ProgramError(
                f"duplicate label {_q(name)} (first defined on line {first})", n, t.col
            )
        try:
            check_label_name(name)
        except ProgramError as e:
            raise ProgramError(e.message, n, t.col) from None
        self.labels[name] = len(self.code)
        self.where[name] = (n, t.col)

    def operands(self, op: str, toks: list[_Tok], n: int, end: int) -> tuple[Operand, ...]:
        kinds = INSTRUCTIONS[op]
        fewest, most = arity(op)
        args: list[Operand] = []
        i = 0
        while i < len(toks):
            t = toks[i]
            if args:
                if t.kind == _COMMA and i + 1 == len(toks):
                    k = len(args)
                    want = _WANT[kinds[k]] if k < fewest else "end of line"
                    raise ProgramError(f"trailing comma; expected {want}", n, t.col)
                if len(args) == most:
                    raise _too_many(op, t, n)
                if t.kind != _COMMA:
                    raise ProgramError(f"missing comma before {t.shown()}; expected ','", n, t.col)
                i += 1
                t = toks[i]
            elif most == 0:
                raise _too_many(op, t, n)
            kind = kinds[len(args)]
            if t.kind == _COMMA and i + 1 == len(toks):
                raise ProgramError(f"trailing comma; expected {_WANT[kind]}", n, t.col)
            if t.kind in (_COMMA, _COLON):
                raise ProgramError(f"unexpected {t.shown()}; expected {_WANT[kind]}", n, t.col)
            arg = self.seen.get((kind, t.text))
            if arg is None:
                arg = self.seen[kind, t.text] = self.operand(kind, t, n)
            args.append(arg)
            i += 1
        if len(args) < fewest:
            k = len(args) + 1
            raise ProgramError(
                f"missing operand {k} of {op!r} ({takes(op)}); expected {_WANT[kinds[k - 1]]}",
                n,
                end,
            )
        return tuple(args)

    def operand(self, kind: OperandKind, t: _Tok, n: int) -> Operand:
        want = _WANT[kind]
        if t.kind == _INT:
            value = _integer(t.text)
            if kind not in (OperandKind.VALUE, OperandKind.SIGNAL):
                raise ProgramError(
                    f"integer {_q(t.text)} where {_NOUN[kind]} is needed; expected {want}",
                    n,
                    t.col,
                )
            if value is None or not IMM_MIN <= value <= IMM_MAX:
                raise ProgramError(
                    f"integer {_q(t.text)} out of range; expected {IMM_MIN}..{IMM_MAX}",
                    n,
                    t.col,
                )
            return Imm(value)
        name = t.text
        if kind == OperandKind.DISPOSITION:
            try:
                return Disposition(name)
            except ValueError:
                raise ProgramError(
                    f"unknown disposition {_q(name)}; expected {want}", n, t.col
                ) from None
        if REGISTER_LIKE_RE.fullmatch(name) and name not in REG_INDEX:
            raise ProgramError(f"unknown register {_q(name)}; expected {REG_WORDS}", n, t.col)
        if kind == OperandKind.LABEL:
            if name in self.label_names:
                return LabelRef(name)
            what = _what(name, self.label_names)
            if what == "name":
                raise ProgramError(f"undefined label {_q(name)}", n, t.col)
            raise ProgramError(
                f"{what} {_q(name)} where a label is needed; expected {want}", n, t.col
            )
        if name in REG_INDEX:
            return Reg(name)
        if kind == OperandKind.DEST:
            raise ProgramError(
                f"{_what(name, self.label_names)} {_q(name)} where a register is needed; "
                f"expected {want}",
                n,
                t.col,
            )
        if name in SIGNALS:
            return Imm(SIGNALS[name])
        if name in ERRNO and kind == OperandKind.VALUE:
            return Imm(ERRNO[name])
        what = _what(name, self.label_names)
        if what == "name":
            raise ProgramError(f"unknown name {_q(name)}; expected {want}", n, t.col)
        raise ProgramError(
            f"{what} {_q(name)} where {_NOUN[kind]} is needed; expected {want}", n, t.col
        )

    def finish(self) -> Program:
        if not self.code:
            raise ProgramError("no instructions; expected at least one instruction", 1, 1)
        if self.labels.get("main") == len(self.code):
            line, col = self.where["main"]
            raise ProgramError(
                "label 'main' marks no instruction; expected an instruction after it",
                line,
                col,
            )
        return Program(tuple(self.code), self.labels, self.labels.get("main", 0))


def _too_many(op: str, t: _Tok, n: int) -> ProgramError:
    found = "unexpected ':'" if t.kind == _COLON else f"too many operands at {t.shown()}"
    return ProgramError(f"{found}; expected end of line ({op!r} {takes(op)})", n, t.col)


def _integer(text: str) -> int | None:
    """Value of an integer token (leading zeros are decimal, not octal); None
    when it has too many digits to fit a 64-bit word."""
    body = text.removeprefix("-")
    base = 16 if body[:2] in ("0x", "0X") else 10
    digits = (body[2:] if base == 16 else body).lstrip("0")
    if len(digits) > _MAX_DIGITS[base]:
        return None
    value = int(digits or "0", base)
    return -value if text.startswith("-") else value


def _what(name: str, labels: set[str]) -> str:
    """How the text form reads ``name``: 'register', 'label', ... or 'name'."""
    if name in REG_INDEX:
        return "register"
    if name in labels:
        return "label"
    if name in SIGNALS:
        return "signal name"
    if name in ERRNO:
        return "errno name"
    return "name"


def parse(text: str) -> Program:
    """Parse the text form of a program; raise ``ProgramError`` if it is bad."""
    if not isinstance(text, str):
        raise ProgramError(f"program text is {type(text).__name__}; expected str")
    if len(text) > MAX_TEXT_BYTES:
        raise ProgramError(f"program text is {len(text):,} characters; "
                           f"expected at most {MAX_TEXT_BYTES:,}")
    lines: list[list[_Tok] | ProgramError] = []
    for n, line in enumerate(text.split("\n"), 1):
        try:
            lines.append(_tokens(line, n))
        except ProgramError as e:  # raised when the parser reaches line n
            lines.append(e)
    p = _Parser(lines)
    for n in range(1, len(lines) + 1):
        p.line(n)
    return p.finish()


def format_operand(kind: OperandKind, arg: Operand) -> str:
    """Text of one operand; signal immediates are written as signal names."""
    if isinstance(arg, Imm):
        if kind == OperandKind.SIGNAL and arg.value in SIGNAL_NAMES:
            return SIGNAL_NAMES[arg.value]
        return str(arg.value)
    if isinstance(arg, Disposition):
        return arg.value
    return arg.name


def format_instr(ins: Instr) -> str:
    """Text of one instruction, e.g. ``kill r1, SIGKILL``.

    In ``beq``/``bne``/``blt`` against ``err``, a known errno is written by
    name (``bne err, EINTR, retry``).
    """
    if not ins.args:
        return ins.op
    parts = [format_operand(k, a) for k, a in zip(INSTRUCTIONS[ins.op], ins.args, strict=False)]
    if ins.op in ("beq", "bne", "blt") and Reg("err") in ins.args[:2]:
        for j in (0, 1):
            a = ins.args[j]
            if isinstance(a, Imm) and a.value in ERRNO_NAMES:
                parts[j] = ERRNO_NAMES[a.value]
    return f"{ins.op} {', '.join(parts)}"


def format_program(p: Program) -> str:
    """Text that ``parse`` turns back into a program equal to ``p``."""
    at: dict[int, list[str]] = {}
    for name, index in p.labels.items():
        at.setdefault(index, []).append(name)
    out: list[str] = []
    for i, ins in enumerate(p.code):
        out.extend(f"{name}:" for name in at.get(i, ()))
        out.append(f"    {format_instr(ins)}")
    out.extend(f"{name}:" for name in at.get(len(p.code), ()))
    return "\n".join(out) + "\n"
