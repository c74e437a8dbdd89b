"""The user instruction set, as data.

``INSTRUCTIONS`` maps each instruction name to the kinds of its operands, in
order.  The parser, the formatter, the msgpack codec, the interpreter and the
program generator all iterate over this one table.  An instruction may take
fewer operands than its tuple lists only if ``MIN_OPERANDS`` says so (today
only ``wait``, whose PID is optional).

System calls set ``rv`` and ``err`` (``err`` is 0 on success); ``wait`` also
sets ``st``.  ``spin``, ``yield``, ``nop``, ``load``, ``store``, ``mov``,
``add``, ``sub`` and the jumps are user-mode work.
"""

from __future__ import annotations

import enum
import re


class OperandKind(enum.Enum):
    """What an operand slot accepts (see ``realfork.user.program``)."""

    VALUE = "value"
    """A ``Reg`` or an ``Imm`` (text: register, integer, errno or signal name)."""
    DEST = "dest"
    """A ``Reg`` that is written (``rv``, ``err`` and ``st`` are allowed)."""
    SIGNAL = "signal"
    """A ``Reg`` or an ``Imm`` (text: signal name, integer or register)."""
    LABEL = "label"
    """A ``LabelRef`` to a label defined in the same program."""
    DISPOSITION = "disposition"
    """A ``Disposition``: the keyword default, ignore or catch."""


class Disposition(enum.Enum):
    """Signal disposition operand of ``sigaction``; the value is its keyword."""

    DEFAULT = "default"
    IGNORE = "ignore"
    CATCH = "catch"


REGISTERS: tuple[str, ...] = (
    "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "rv", "err", "st",
)  # fmt: skip
"""Register names: general r0..r7, then rv (last system call's return
value), err (its errno, 0 on success) and st (status from ``wait``)."""

REG_INDEX: dict[str, int] = {name: i for i, name in enumerate(REGISTERS)}
"""Register name to its index in ``REGISTERS`` (for a list register file)."""

NUM_REGISTERS = len(REGISTERS)

V = OperandKind.VALUE
D = OperandKind.DEST
S = OperandKind.SIGNAL
L = OperandKind.LABEL

INSTRUCTIONS: dict[str, tuple[OperandKind, ...]] = {
    # process creation: rv = child pid in the parent, 0 in the child
    "fork1": (),
    "forkall": (),
    "vfork": (),
    "exit": (V,),  # exit STATUS
    "exec": (L,),  # continue at LABEL: registers cleared, one lwp, zeroed memory
    "wait": (V,),  # wait [PID]: rv = pid, st = exit code or 128+signal
    "getpid": (),
    "getppid": (),
    # lwps
    "lwp_create": (L,),  # new lwp at LABEL with a copy of the registers
    "lwp_exit": (),
    "lwp_self": (),
    "lwp_suspend": (V,),  # lwp_suspend ID
    "lwp_continue": (V,),  # lwp_continue ID
    "lwp_wait": (V,),  # lwp_wait ID (0 = any)
    # time and scheduling
    "sleep": (V,),  # sleep MS: interruptible, rv = 0 or -1 with EINTR
    "spin": (V,),  # spin N: N steps of user-mode work
    "yield": (),
    "nop": (),
    # signals and credentials
    "kill": (V, S),  # kill PID, SIG
    "sigaction": (S, OperandKind.DISPOSITION),  # sigaction SIG, default|ignore|catch
    "sigmask": (S, V),  # sigmask SIG, ON: block (ON != 0) or unblock the signal in this lwp
    "setuid": (V,),
    # memory and registers
    "load": (D, V),  # load REG, ADDR
    "store": (V, V),  # store ADDR, VALUE
    "mov": (D, V),
    "add": (D, V),
    "sub": (D, V),
    # control flow
    "jmp": (L,),
    "beq": (V, V, L),
    "bne": (V, V, L),
    "blt": (V, V, L),
    # /proc control
    "prlock": (V, V),  # prlock PID, MS: hold P_PR_LOCK for MS milliseconds
    "pragent": (V,),  # pragent PID: agent lwp attempts fork1
    "prfork": (V, V),  # prfork PID, ON: inherit-on-fork tracing
    "prstopfork": (V, V),  # prstopfork PID, ON: stop on exit from fork calls
    "prrun": (V,),  # prrun PID: set the /proc-stopped lwps running
    # DTrace and shared memory (realfork.kernel.dtrace)
    "dtrace_helper": (),  # register a USDT helper provider: rv = helpers now registered
    "usdt_enable": (V, V),  # usdt_enable PID, ON: enable (ON != 0) or tear down PID's USDT probes
    "shmat": (),  # attach the shared memory segment: rv = attachments now
    # core files and zones
    "coreadm": (V, V),  # coreadm PID, N: core-file pattern and content N for PID (0: self)
    "zone_create": (),  # rv = the pid of a new zsched, a kernel process and our child
}

MIN_OPERANDS: dict[str, int] = {"wait": 0}
"""Instructions whose trailing operands are optional: the minimum count.
``wait`` without an operand reaps any child."""

del V, D, S, L


def arity(op: str) -> tuple[int, int]:
    """(fewest, most) operands of instruction ``op``."""
    kinds = INSTRUCTIONS[op]
    return MIN_OPERANDS.get(op, len(kinds)), len(kinds)


IMM_MIN = -(2**63)
IMM_MAX = 2**63 - 1
"""Immediates are signed 64-bit words (they must fit msgpack integers)."""

LABEL_RE = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
"""Syntax of a label name (also excludes the reserved names of ``program``)."""

REGISTER_LIKE_RE = re.compile(r"r[0-9]+")
"""Names spelt like a register (``r9``) are reserved, never labels."""
