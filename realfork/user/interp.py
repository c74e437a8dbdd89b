"""The interpreter: one loop per lwp, on that lwp's own OS thread.

The user context is (program, pc, registers).  The loop keeps pc and the
registers in Python locals and saves them into the lwp's ``klwp_t`` at every
kernel entry (a system call, or the AST trap it takes between instructions
when ``t_astflag`` is set), as a CPU saves user registers on a trap; after
the kernel returns it reloads them, so forklwp can copy a held lwp's context
and exec can replace it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import KernelPanic
from ..kernel.clock import lwp_cpu_start
from ..kernel.detect import user_as_check
from ..kernel.structs import LWP_STOPPED
from ..kernel.syscall import agent_main, post_syscall, syscall, trap_ast
from ..kernel.systab import SYSNUM
from ..sync import lockstat
from ..sync.condvar import cv_wait
from ..sync.kthread import KThread
from ..sync.mutex import mutex_enter, mutex_exit
from .isa import Disposition
from .program import Imm, LabelRef, Program, Reg

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

_DISP = {Disposition.DEFAULT: 0, Disposition.IGNORE: 1, Disposition.CATCH: 2}
SIGSEGV = 11
PROGRESS_EVERY = 64  # user instructions between heartbeats

# user-mode instructions, as small integers for the dispatch below
(U_MOV, U_ADD, U_SUB, U_JMP, U_BEQ, U_BNE, U_BLT, U_LOAD, U_STORE, U_SPIN, U_YIELD,
 U_NOP) = range(1, 13)
_USER = {"mov": U_MOV, "add": U_ADD, "sub": U_SUB, "jmp": U_JMP, "beq": U_BEQ, "bne": U_BNE,
         "blt": U_BLT, "load": U_LOAD, "store": U_STORE, "spin": U_SPIN, "yield": U_YIELD,
         "nop": U_NOP}

Compiled = list[tuple[int, int, tuple[tuple[bool, int], ...]]]


def compile_program(prog: Program) -> Compiled:
    """Each instruction as (user op or 0, system call number or 0, operands),
    an operand being (is_register, register index or value)."""
    out: Compiled = []
    for ins in prog.code:
        ops: list[tuple[bool, int]] = []
        for a in ins.args:
            if isinstance(a, Reg):
                ops.append((True, a.index))
            elif isinstance(a, Imm):
                ops.append((False, a.value))
            elif isinstance(a, LabelRef):
                ops.append((False, prog.labels[a.name]))
            elif isinstance(a, Disposition):
                ops.append((False, _DISP[a]))
            else:  # pragma: no cover - Program validates its operands
                raise TypeError(a)
        if ins.op == "wait" and not ops:
            ops.append((False, -1))  # any child
        out.append((_USER.get(ins.op, 0), SYSNUM.get(ins.op, 0), tuple(ops)))
    return out


_compiled: dict[tuple[str, int], Compiled] = {}  # (kernel, run) -> code, this process


def compiled(K: Kernel) -> Compiled:
    """The current run's program, decoded and compiled once per run per process."""
    key = (K.dom.name, K.g.run_seq)
    code = _compiled.get(key)
    if code is None:
        from .codec import from_msgpack

        _compiled.clear()  # earlier runs are over
        code = _compiled[key] = compile_program(from_msgpack(K.program_bytes()))
    return code


def lwp_main(K: Kernel, t: KThread) -> None:
    """The body of every lwp's OS thread: wait to be set running, finish the
    system call it was cloned in (lwp_rtt), then run user code."""
    if not lockstat.ON and K.dom.g.lockstat:
        lockstat.refresh(K.dom)  # a host process learns that lockstat was switched on
    lw = K.lwps[t.slot]
    lwp_cpu_start(lw)  # lwp-exit reports the CPU this OS thread used from here on
    p = K.proc(lw.t_procp)
    cv = K.t_cv(t)
    mutex_enter(p.p_lock)
    while lw.t_kstate == LWP_STOPPED:
        cv_wait(cv, p.p_lock, patient=True)
    mutex_exit(p.p_lock)
    if lw.pc == -1:
        agent_main(K, t)
        return
    K.fire("proc:::lwp-start", p.s.p_pid, lw.t_tid)
    if p.id == K.g.proc_init and lw.t_tid == 1 and not K.faults.armed:
        K.faults.arm()  # fault counting starts with the user's program
    if lw.t_sysnum:
        post_syscall(K, t)  # a clone returns from its original's system call
    run_user(K, t)


def run_user(K: Kernel, t: KThread) -> Any:
    lw = K.lwps[t.slot]
    ts = t.s
    code = compiled(K)
    ncode = len(code)
    g = K.dom.g
    pc = lw.pc
    regs = list(lw.regs)
    spinleft = lw.spinleft
    budget = PROGRESS_EVERY
    while True:
        if ts.t_astflag:
            lw.pc, lw.spinleft = pc, spinleft
            lw.regs[:] = regs
            trap_ast(K, t)
            pc, spinleft = lw.pc, lw.spinleft
            regs = list(lw.regs)
        budget -= 1
        if budget == 0:
            budget = PROGRESS_EVERY
            if g.panicked or g.shutting_down:  # an lwp that never enters the kernel stops too
                raise KernelPanic("kernel panicked" if g.panicked else "kernel shut down")
            g.progress += 1
        if not 0 <= pc < ncode:
            # running off the end is lwp_exit (the last lwp ends the process, 0)
            lw.pc = pc
            lw.regs[:] = regs
            syscall(K, t, SYSNUM["lwp_exit"])
            return
        uop, sysnum, ops = code[pc]
        if uop:
            a = ops[0] if ops else None
            if uop == U_MOV:
                regs[a[1]] = _val(regs, ops[1])  # type: ignore[index]
            elif uop == U_ADD:
                x = regs[a[1]] + _val(regs, ops[1])  # type: ignore[index]
                regs[a[1]] = x if -WORD <= x < WORD else _wrap(x)  # type: ignore[index]
            elif uop == U_SUB:
                x = regs[a[1]] - _val(regs, ops[1])  # type: ignore[index]
                regs[a[1]] = x if -WORD <= x < WORD else _wrap(x)  # type: ignore[index]
            elif uop == U_JMP:
                pc = a[1]  # type: ignore[index]
                continue
            elif uop in (U_BEQ, U_BNE, U_BLT):
                x, y = _val(regs, ops[0]), _val(regs, ops[1])
                if (x == y if uop == U_BEQ else x != y if uop == U_BNE else x < y):
                    pc = ops[2][1]
                    continue
            elif uop == U_LOAD or uop == U_STORE:
                addr = _val(regs, ops[1] if uop == U_LOAD else ops[0])
                words = _as_words(K, t)
                if words is None or not 0 <= addr < len(words):
                    _segv(K, t, lw, pc, regs)
                    return
                if uop == U_LOAD:
                    regs[a[1]] = words[addr]  # type: ignore[index]
                else:
                    words[addr] = _val(regs, ops[1])
            elif uop == U_SPIN:
                if spinleft == 0:
                    spinleft = max(_val(regs, a), 0)  # type: ignore[arg-type]
                x = 0
                while spinleft > 0 and not ts.t_astflag:
                    x = (x * 1103515245 + 12345) & 0xFFFFFFFF
                    spinleft -= 1
                if spinleft > 0:
                    continue  # take the AST, then finish the spin
                g.progress += 1
            elif uop == U_YIELD:
                import time

                time.sleep(0)
            pc += 1
            continue
        # a system call: save the context, enter the kernel, reload
        lw.pc = pc + 1
        lw.spinleft = 0
        lw.regs[:] = regs
        a0 = _val(regs, ops[0]) if ops else 0
        a1 = _val(regs, ops[1]) if len(ops) > 1 else 0
        syscall(K, t, sysnum, a0, a1)
        user_as_check(K, t)  # back to user mode: not on an address space lent to vfork
        pc = lw.pc
        regs = list(lw.regs)
        spinleft = 0


WORD = 1 << 63  # registers are signed 64-bit words


def _wrap(x: int) -> int:
    return ((x + WORD) % (2 * WORD)) - WORD


def _val(regs: list[int], op: tuple[bool, int]) -> int:
    return regs[op[1]] if op[0] else op[1]


def _as_words(K: Kernel, t: KThread) -> Any:
    p = K.proc(K.lwps[t.slot].t_procp)
    a = p.s.p_as
    if not a or a == K.g.kas:
        return None
    return K.ases.slots[a - 1].a_words


def _segv(K: Kernel, t: KThread, lw: Any, pc: int, regs: list[int]) -> None:
    """A bad address: the process takes SIGSEGV (default action: it dies)."""
    from ..kernel.exit import exit_proc
    from ..kernel.structs import CLD_KILLED

    lw.pc = pc
    lw.regs[:] = regs
    exit_proc(K, t, K.proc(lw.t_procp), CLD_KILLED, SIGSEGV)
