"""Program data model: operands, instructions and whole programs.

A ``Program`` is valid by construction: its constructor checks every
instruction against ``isa.INSTRUCTIONS``, every label and the entry point, and
raises ``ProgramError`` otherwise.  So the interpreter may trust what it gets.

Operands are ``Reg``, ``Imm``, ``LabelRef`` and ``isa.Disposition``.  Which
ones a slot accepts is given by its ``isa.OperandKind``.  Errno and signal
names exist only in the text form; in a ``Program`` they are ``Imm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from realfork.errors import BadInput
from realfork.kernel.errno_defs import ERRNO
from realfork.kernel.signal_defs import SIGNALS
from realfork.user.isa import (
    IMM_MAX,
    IMM_MIN,
    INSTRUCTIONS,
    LABEL_RE,
    REG_INDEX,
    REGISTER_LIKE_RE,
    REGISTERS,
    Disposition,
    OperandKind,
    arity,
)

MAX_INSTRUCTIONS = 65_536
"""Largest program accepted, in instructions."""

REG_WORDS = "a register r0..r7, rv, err or st"


class ProgramError(BadInput):
    """A program is malformed.  ``str()`` is one line, prefixed with the
    position (``line L, column C: ...``) when it is known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.line = line
        self.column = column
        if line is not None and column is not None:
            text = f"line {line}, column {column}: {message}"
        elif line is not None:
            text = f"line {line}: {message}"
        else:
            text = message
        super().__init__(text)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.line, self.column))


@dataclass(frozen=True, slots=True)
class Reg:
    """A register operand; ``name`` is one of ``isa.REGISTERS``."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in REG_INDEX:
            raise ProgramError(f"unknown register {self.name!r}; expected {REG_WORDS}")

    @property
    def index(self) -> int:
        """Position in ``isa.REGISTERS``."""
        return REG_INDEX[self.name]


@dataclass(frozen=True, slots=True)
class Imm:
    """An immediate: a signed 64-bit integer."""

    value: int

    def __post_init__(self) -> None:
        v = self.value
        if not isinstance(v, int) or isinstance(v, bool):
            raise ProgramError(f"immediate is {type(v).__name__}; expected an integer")
        if not IMM_MIN <= v <= IMM_MAX:
            raise ProgramError(f"integer {v} out of range; expected {IMM_MIN}..{IMM_MAX}")
        if type(v) is not int:  # e.g. an IntEnum: keep equality and repr plain
            object.__setattr__(self, "value", int(v))


@dataclass(frozen=True, slots=True)
class LabelRef:
    """A reference to a label; ``Program.labels[name]`` is its target."""

    name: str

    def __post_init__(self) -> None:
        check_label_name(self.name)


Operand = Reg | Imm | LabelRef | Disposition

_ACCEPTS: dict[OperandKind, tuple[type, ...]] = {
    OperandKind.VALUE: (Reg, Imm),
    OperandKind.DEST: (Reg,),
    OperandKind.SIGNAL: (Reg, Imm),
    OperandKind.LABEL: (LabelRef,),
    OperandKind.DISPOSITION: (Disposition,),
}

_KIND_WORDS: dict[OperandKind, str] = {
    OperandKind.VALUE: "a register or an immediate",
    OperandKind.DEST: "a register",
    OperandKind.SIGNAL: "a register or an immediate",
    OperandKind.LABEL: "a label reference",
    OperandKind.DISPOSITION: "a disposition (default, ignore or catch)",
}


def _plural(n: int) -> str:
    return f"{n} operand" if n == 1 else f"{n} operands"


def takes(op: str) -> str:
    """'takes 2 operands', 'takes 0 or 1 operand' ..., for error messages."""
    lo, hi = arity(op)
    if hi == 0:
        return "takes no operands"
    if lo == hi:
        return f"takes {_plural(hi)}"
    sep = "or" if hi == lo + 1 else "to"
    return f"takes {lo} {sep} {_plural(hi)}"


@dataclass(frozen=True, slots=True)
class Instr:
    """One instruction.  ``line`` is its source line (0 when not from text);
    it is ignored by ``==``."""

    op: str
    args: tuple[Operand, ...] = ()
    line: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        line = self.line or None
        if not isinstance(self.op, str) or self.op not in INSTRUCTIONS:
            raise ProgramError(f"unknown instruction {self.op!r}", line)
        if not isinstance(self.args, tuple):
            object.__setattr__(self, "args", tuple(self.args))
        lo, hi = arity(self.op)
        if not lo <= len(self.args) <= hi:
            raise ProgramError(
                f"{self.op!r} has {_plural(len(self.args))}; it {takes(self.op)}", line
            )
        for n, (kind, arg) in enumerate(zip(INSTRUCTIONS[self.op], self.args, strict=False), 1):
            if not isinstance(arg, _ACCEPTS[kind]):
                raise ProgramError(
                    f"operand {n} of {self.op!r} is {arg!r}; expected {_KIND_WORDS[kind]}",
                    line,
                )


def reserved_name(name: str) -> str | None:
    """Why ``name`` cannot be a label ('a register name', ...), or None."""
    if name in REG_INDEX or REGISTER_LIKE_RE.fullmatch(name):
        return "a register name"
    if name in ERRNO:
        return "an errno name"
    if name in SIGNALS:
        return "a signal name"
    return None


def check_label_name(name: object) -> None:
    """Raise ``ProgramError`` unless ``name`` can be a label."""
    if not isinstance(name, str) or not LABEL_RE.fullmatch(name):
        raise ProgramError(
            f"bad label name {name!r}; expected a letter, '_' or '.' "
            "followed by letters, digits, '_' or '.'"
        )
    why = reserved_name(name)
    if why:
        raise ProgramError(f"label {name!r} is {why}; expected another name")


@dataclass(frozen=True, slots=True)
class Program:
    """A whole program.

    ``labels`` maps each label to the index in ``code`` of the instruction it
    precedes; ``len(code)`` is allowed and means the end of the program.
    ``entry`` is ``labels["main"]`` if there is a ``main`` label, else 0.
    Do not mutate ``labels``.
    """

    code: tuple[Instr, ...]
    labels: dict[str, int] = field(hash=False)
    entry: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.code, tuple):
            object.__setattr__(self, "code", tuple(self.code))
        if not isinstance(self.labels, dict):
            raise ProgramError(f"labels is {type(self.labels).__name__}; expected a dict")
        object.__setattr__(self, "labels", dict(self.labels))
        _check_program(self)


def _check_program(p: Program) -> None:
    n = len(p.code)
    if n == 0:
        raise ProgramError("program has no instructions; expected at least one")
    if n > MAX_INSTRUCTIONS:
        raise ProgramError(f"program has {n} instructions; expected at most {MAX_INSTRUCTIONS}")
    for name, index in p.labels.items():
        check_label_name(name)
        if not isinstance(index, int) or isinstance(index, bool):
            raise ProgramError(
                f"label {name!r} target is {type(index).__name__}; expected an integer"
            )
        if not 0 <= index <= n:
            raise ProgramError(f"label {name!r} at {index} out of range; expected 0..{n}")
    for i, ins in enumerate(p.code):
        if not isinstance(ins, Instr):
            raise ProgramError(f"code[{i}] is {type(ins).__name__}; expected an Instr")
        for arg in ins.args:
            if isinstance(arg, LabelRef) and arg.name not in p.labels:
                raise ProgramError(
                    f"instruction {i} ({ins.op!r}): undefined label {arg.name!r}",
                    ins.line or None,
                )
    entry = p.entry
    if not isinstance(entry, int) or isinstance(entry, bool):
        raise ProgramError(f"entry is {type(entry).__name__}; expected an integer")
    if not 0 <= entry < n:
        raise ProgramError(f"entry {entry} out of range; expected 0..{n - 1}")
    if "main" in p.labels and entry != p.labels["main"]:
        want = p.labels["main"]
        raise ProgramError(f"entry is {entry} but label 'main' is at {want}; expected {want}")
    if "main" not in p.labels and entry != 0:
        raise ProgramError(f"entry is {entry} without a 'main' label; expected 0")


__all__ = [
    "MAX_INSTRUCTIONS",
    "REGISTERS",
    "Disposition",
    "Imm",
    "Instr",
    "LabelRef",
    "Operand",
    "Program",
    "ProgramError",
    "Reg",
    "check_label_name",
]
