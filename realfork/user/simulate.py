"""A reference interpreter of the user-program language: a toy model that checks
what the program generator promises.

``simulate(program, seed)`` runs a program on a toy model of the language
(processes and lwps are Python objects, one instruction per step, scheduling
random from ``seed``) and reports termination, the process and lwp counts and
contract breaches; the tests run it over many generated programs
(``realfork.user.generate``) beside the real interpreter.  It shares no code
with ``realfork.user.interp``: it is an independent reading of the language.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from realfork.kernel import errno_defs as E
from realfork.kernel import signal_defs as S
from realfork.user.isa import IMM_MAX, NUM_REGISTERS, Disposition
from realfork.user.program import Imm, Instr, LabelRef, Operand, Program, Reg

__all__ = ["SimResult", "simulate"]

MEMORY_WORDS = 64
"""Memory words of a process (load/store addresses 0..63)."""

_C, _D = Disposition.CATCH, Disposition.DEFAULT
_STOP_SIGNALS = frozenset({S.SIGSTOP, S.SIGTSTP, S.SIGTTIN, S.SIGTTOU})
_IGNORED_BY_DEFAULT = frozenset({S.SIGCHLD, S.SIGPWR, S.SIGWINCH, S.SIGURG, S.SIGCONT})
_VFORK_CHILD_OPS = frozenset({"store", "mov", "add", "exit", "exec", "beq", "bne", "blt", "jmp"})
_RV, _ERR, _ST = Reg("rv").index, Reg("err").index, Reg("st").index


def _wrap(v: int) -> int:
    """Two's-complement 64-bit wrap, like the machine word."""
    v &= 2**64 - 1
    return v - 2**64 if v > IMM_MAX else v


@dataclass
class _Lwp:
    lwpid: int
    pc: int
    regs: list[int]
    block: tuple[str, int] | None = None  # ("wait", pid|0), ("lwp_wait", id), ("vfork", pid)
    suspended: bool = False
    zombie: bool = False


@dataclass
class _Proc:
    pid: int
    ppid: int
    uid: int
    mem: list[int]
    lwps: dict[int, _Lwp]
    next_lwpid: int
    disp: dict[int, Disposition]
    children: set[int] = field(default_factory=set)  # unreaped, alive or zombie
    zombies: dict[int, int] = field(default_factory=dict)  # pid -> wait status
    vforked: bool = False  # a vfork child that has not exited or exec'd
    alive: bool = True

    def live_lwps(self) -> int:
        return sum(not lw.zombie for lw in self.lwps.values())


@dataclass
class SimResult:
    """What ``simulate`` saw."""

    terminated: bool = False
    """Every process ended within the step budget."""
    deadlocked: bool = False
    """No lwp could run while some process was alive."""
    steps: int = 0
    procs: int = 0
    """Processes ever created, init included."""
    max_lwps: int = 0
    """Most live lwps any one process had at once."""
    init_status: int | None = None
    fork_failures: int = 0
    lwp_create_failures: int = 0
    interrupted: int = 0
    """Blocked system calls a caught signal cut short with EINTR."""
    early_exits: list[tuple[int, int]] = field(default_factory=list)
    """(pid, unreaped children) for each process that exited before reaping."""
    signaled: list[tuple[int, int]] = field(default_factory=list)
    """(pid, signal) for each process a signal terminated."""
    violations: list[str] = field(default_factory=list)
    """Breaches of the generator's contract (vfork child doing a system call, ...)."""
    executed: Counter[str] = field(default_factory=Counter)
    """How many times each instruction ran."""

    def problems(
        self, max_procs: int, max_lwps: int, init_may_exit_early: bool = False
    ) -> list[str]:
        """Everything that breaks the generator's promises; empty when fine."""
        out = list(self.violations)
        if self.deadlocked:
            out.append(f"deadlock after {self.steps} steps")
        elif not self.terminated:
            out.append(f"did not terminate within {self.steps} steps")
        if self.procs > max_procs:
            out.append(f"{self.procs} processes; at most {max_procs} allowed")
        if self.max_lwps > max_lwps:
            out.append(f"a process had {self.max_lwps} lwps; at most {max_lwps} allowed")
        for pid, n in self.early_exits:
            if not (pid == 1 and init_may_exit_early):
                out.append(f"pid {pid} exited with {n} unreaped children")
        out.extend(f"pid {pid} killed by signal {sig}" for pid, sig in self.signaled)
        return out


class _Sim:
    def __init__(
        self, program: Program, rng: random.Random, maxprocs: int | None, maxlwps: int | None
    ) -> None:
        self.prog = program
        self.rng = rng
        self.maxprocs = maxprocs
        self.maxlwps = maxlwps
        self.procs: dict[int, _Proc] = {}
        self.existing: set[int] = set()  # not yet reaped
        self.next_pid = 1
        self.r = SimResult()
        init = self.new_proc(0, [0] * MEMORY_WORDS, {})
        init.lwps[1] = _Lwp(1, program.entry, [0] * NUM_REGISTERS)
        init.next_lwpid = 2
        self.r.max_lwps = 1

    def new_proc(self, ppid: int, mem: list[int], disp: dict[int, Disposition]) -> _Proc:
        pid = self.next_pid
        self.next_pid += 1
        uid = self.procs[ppid].uid if ppid in self.procs else 0
        p = _Proc(pid, ppid, uid, mem, {}, 1, dict(disp))
        self.procs[pid] = p
        self.existing.add(pid)
        if ppid in self.procs:
            self.procs[ppid].children.add(pid)
        self.r.procs += 1
        return p

    def violation(self, p: _Proc, lw: _Lwp, what: str) -> None:
        self.r.violations.append(f"pid {p.pid} lwp {lw.lwpid} at {lw.pc}: {what}")

    # -- scheduling

    def run(self, max_steps: int) -> SimResult:
        r = self.r
        while True:
            live = [p for p in self.procs.values() if p.alive]
            if not live:
                r.terminated = True
                return r
            ready = [
                (p, lw)
                for p in live
                for lw in p.lwps.values()
                if not lw.zombie and not lw.suspended and (lw.block is None or self.ready(p, lw))
            ]
            if not ready:
                r.deadlocked = True
                return r
            if r.steps >= max_steps:
                return r
            r.steps += 1
            p, lw = self.rng.choice(ready)
            if lw.block is not None:
                self.finish(p, lw)
            else:
                self.step(p, lw)

    def ready(self, p: _Proc, lw: _Lwp) -> bool:
        assert lw.block is not None
        what, arg = lw.block
        if what == "wait":
            match = [c for c in p.children if arg <= 0 or c == arg]
            return not match or any(c in p.zombies for c in match)
        if what == "lwp_wait":
            t = p.lwps.get(arg)
            return t is None or t.zombie
        return not self.procs[arg].vforked  # "vfork"

    def finish(self, p: _Proc, lw: _Lwp) -> None:
        """Complete the blocked system call of ``lw`` (``ready`` said it can)."""
        assert lw.block is not None
        what, arg = lw.block
        lw.block = None
        regs = lw.regs
        if what == "wait":
            match = sorted(c for c in p.children if (arg <= 0 or c == arg) and c in p.zombies)
            if match:
                pid = match[0]
                regs[_RV], regs[_ERR], regs[_ST] = pid, 0, p.zombies.pop(pid)
                p.children.discard(pid)
                self.existing.discard(pid)
            else:
                regs[_RV], regs[_ERR] = -1, E.ECHILD
        elif what == "lwp_wait":
            if arg in p.lwps:
                del p.lwps[arg]
                regs[_RV], regs[_ERR] = 0, 0
            else:
                regs[_RV], regs[_ERR] = -1, E.ESRCH
        else:
            regs[_RV], regs[_ERR] = arg, 0

    # -- processes

    def exit_proc(self, p: _Proc, status: int) -> None:
        if not p.alive:
            return
        p.alive = False
        if p.children:
            self.r.early_exits.append((p.pid, len(p.children)))
        init = self.procs[1]
        for c in sorted(p.children):
            child = self.procs[c]
            if init.alive and p.pid != 1:
                child.ppid = 1
                init.children.add(c)
                if c in p.zombies:
                    init.zombies[c] = p.zombies[c]
            else:
                child.ppid = 0
                if not child.alive:
                    self.existing.discard(c)
        p.children.clear()
        p.zombies.clear()
        p.lwps.clear()
        p.vforked = False
        parent = self.procs.get(p.ppid)
        if parent is not None and parent.alive:
            parent.zombies[p.pid] = status
        else:
            self.existing.discard(p.pid)
        if p.pid == 1:
            self.r.init_status = status

    def signal(self, p: _Proc, lw: _Lwp, pid: int, sig: int) -> tuple[int, int]:
        """``kill pid, sig`` from ``p``: (rv, err)."""
        if pid <= 0:
            self.violation(p, lw, f"kill {pid} signals a process group")
            return -1, E.EINVAL
        if not 1 <= sig < S.NSIG:
            return -1, E.EINVAL
        if sig == S.SIGKILL and pid == 1:
            self.violation(p, lw, "SIGKILL sent to init")
        t = self.procs.get(pid)
        if t is None or pid not in self.existing:
            return -1, E.ESRCH
        if not t.alive:
            return 0, 0
        disp = t.disp.get(sig, _D)
        if sig == S.SIGKILL or (
            disp == _D and sig not in _IGNORED_BY_DEFAULT and sig not in _STOP_SIGNALS
        ):
            self.r.signaled.append((pid, sig))
            self.exit_proc(t, 128 + sig)
        elif disp == _C:  # the handler interrupts one sleeping system call
            for other in t.lwps.values():
                if other.block is not None and other.block[0] != "vfork":
                    other.block = None
                    other.regs[_RV], other.regs[_ERR] = -1, E.EINTR
                    self.r.interrupted += 1
                    break
        return 0, 0

    # -- one instruction

    def val(self, lw: _Lwp, a: Operand) -> int:
        if isinstance(a, Reg):
            return lw.regs[a.index]
        assert isinstance(a, Imm)
        return a.value

    def target(self, a: Operand) -> int:
        assert isinstance(a, LabelRef)
        return self.prog.labels[a.name]

    def step(self, p: _Proc, lw: _Lwp) -> None:
        code = self.prog.code
        if lw.pc >= len(code):
            self.violation(p, lw, "ran off the end of the program")
            self.exit_proc(p, 0)
            return
        ins: Instr = code[lw.pc]
        op, args, regs = ins.op, ins.args, lw.regs
        self.r.executed[op] += 1
        if p.vforked and op not in _VFORK_CHILD_OPS:
            self.violation(p, lw, f"vfork child runs {op!r}")
        lw.pc += 1
        handler = getattr(self, f"op_{op}", None)
        if handler is not None:
            handler(p, lw, ins)
        elif op in ("mov", "add", "sub"):
            dest = args[0]
            assert isinstance(dest, Reg)
            v = self.val(lw, args[1])
            if op == "add":
                v += regs[dest.index]
            elif op == "sub":
                v = regs[dest.index] - v
            regs[dest.index] = _wrap(v)
        elif op in ("beq", "bne", "blt"):
            a, b = self.val(lw, args[0]), self.val(lw, args[1])
            if (a == b) if op == "beq" else (a != b) if op == "bne" else (a < b):
                lw.pc = self.target(args[2])
        elif op == "jmp":
            lw.pc = self.target(args[0])
        elif op in ("spin", "yield", "nop"):
            pass
        elif op in ("getpid", "getppid", "lwp_self", "sleep"):
            rv = {"getpid": p.pid, "getppid": p.ppid, "lwp_self": lw.lwpid}.get(op, 0)
            regs[_RV], regs[_ERR] = rv, 0
        else:  # /proc controls, DTrace and shared memory: not modelled
            regs[_RV], regs[_ERR] = 0, 0

    def op_load(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        dest, addr = ins.args[0], self.val(lw, ins.args[1])
        assert isinstance(dest, Reg)
        if not 0 <= addr < MEMORY_WORDS:
            self.violation(p, lw, f"load from address {addr}")
            return
        lw.regs[dest.index] = p.mem[addr]

    def op_store(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        addr, v = self.val(lw, ins.args[0]), self.val(lw, ins.args[1])
        if not 0 <= addr < MEMORY_WORDS:
            self.violation(p, lw, f"store to address {addr}")
            return
        p.mem[addr] = v

    def _fork(self, p: _Proc, lw: _Lwp, op: str) -> None:
        if self.maxprocs is not None and len(self.existing) >= self.maxprocs:
            lw.regs[_RV], lw.regs[_ERR] = -1, E.EAGAIN
            self.r.fork_failures += 1
            return
        vfork = op == "vfork"
        mem = p.mem if vfork else list(p.mem)
        disp = dict(p.disp)
        if vfork:  # the child shares the handlers' memory: caught signals reset
            disp = {s: (_D if d == _C else d) for s, d in disp.items()}
        c = self.new_proc(p.pid, mem, disp)
        c.uid = p.uid
        c.next_lwpid = p.next_lwpid
        copies = [lw] if op != "forkall" else [t for t in p.lwps.values() if not t.zombie]
        for t in copies:
            clone = _Lwp(t.lwpid, t.pc, list(t.regs), suspended=t.suspended)
            if t is lw:
                clone.regs[_RV], clone.regs[_ERR] = 0, 0
                clone.suspended = False
            elif t.block is not None:  # forced out of its system call
                clone.regs[_RV], clone.regs[_ERR] = -1, E.EINTR
            c.lwps[t.lwpid] = clone
        self.r.max_lwps = max(self.r.max_lwps, c.live_lwps())
        lw.regs[_RV], lw.regs[_ERR] = c.pid, 0
        if vfork:
            c.vforked = True
            lw.block = ("vfork", c.pid)

    def op_fork1(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        self._fork(p, lw, "fork1")

    def op_forkall(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        self._fork(p, lw, "forkall")

    def op_vfork(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        self._fork(p, lw, "vfork")

    def op_exit(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        self.exit_proc(p, self.val(lw, ins.args[0]) & 0xFF)

    def op_exec(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        lw.pc = self.target(ins.args[0])
        lw.regs = [0] * NUM_REGISTERS
        lw.lwpid = 1
        p.lwps = {1: lw}
        p.next_lwpid = 2
        p.mem = [0] * MEMORY_WORDS
        p.disp = {s: (_D if d == _C else d) for s, d in p.disp.items()}
        p.vforked = False

    def op_wait(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        lw.block = ("wait", self.val(lw, ins.args[0]) if ins.args else 0)

    def op_lwp_create(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        if self.maxlwps is not None and p.live_lwps() >= self.maxlwps:
            lw.regs[_RV], lw.regs[_ERR] = -1, E.EAGAIN
            self.r.lwp_create_failures += 1
            return
        lwpid = p.next_lwpid
        p.next_lwpid += 1
        p.lwps[lwpid] = _Lwp(lwpid, self.target(ins.args[0]), list(lw.regs))
        self.r.max_lwps = max(self.r.max_lwps, p.live_lwps())
        lw.regs[_RV], lw.regs[_ERR] = lwpid, 0

    def op_lwp_exit(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        lw.zombie = True
        if p.live_lwps() == 0:
            self.exit_proc(p, 0)

    def op_lwp_suspend(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        lwpid = self.val(lw, ins.args[0])
        t = p.lwps.get(lwpid)
        if lwpid == lw.lwpid:
            self.violation(p, lw, "lwp suspends itself")
            lw.regs[_RV], lw.regs[_ERR] = -1, E.EDEADLK
        elif t is None or t.zombie:
            lw.regs[_RV], lw.regs[_ERR] = -1, E.ESRCH
        else:
            t.suspended = True
            lw.regs[_RV], lw.regs[_ERR] = 0, 0

    def op_lwp_continue(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        t = p.lwps.get(self.val(lw, ins.args[0]))
        if t is None or t.zombie:
            lw.regs[_RV], lw.regs[_ERR] = -1, E.ESRCH
        else:
            t.suspended = False
            lw.regs[_RV], lw.regs[_ERR] = 0, 0

    def op_lwp_wait(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        lwpid = self.val(lw, ins.args[0])
        if lwpid == lw.lwpid:
            lw.regs[_RV], lw.regs[_ERR] = -1, E.EDEADLK
            return
        if lwpid == 0:
            zombies = sorted(i for i, t in p.lwps.items() if t.zombie)
            if zombies:
                del p.lwps[zombies[0]]
                lw.regs[_RV], lw.regs[_ERR] = 0, 0
            elif p.live_lwps() > 1:
                self.violation(p, lw, "lwp_wait 0 is not modelled while lwps run")
                lw.regs[_RV], lw.regs[_ERR] = -1, E.EINVAL
            else:
                lw.regs[_RV], lw.regs[_ERR] = -1, E.EDEADLK
            return
        if lwpid not in p.lwps:
            lw.regs[_RV], lw.regs[_ERR] = -1, E.ESRCH
            return
        lw.block = ("lwp_wait", lwpid)

    def op_kill(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        rv, err = self.signal(p, lw, self.val(lw, ins.args[0]), self.val(lw, ins.args[1]))
        if p.alive:
            lw.regs[_RV], lw.regs[_ERR] = rv, err

    def op_sigaction(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        sig, disp = self.val(lw, ins.args[0]), ins.args[1]
        assert isinstance(disp, Disposition)
        if not 1 <= sig < S.NSIG or sig in (S.SIGKILL, S.SIGSTOP):
            lw.regs[_RV], lw.regs[_ERR] = -1, E.EINVAL
            return
        p.disp[sig] = disp
        lw.regs[_RV], lw.regs[_ERR] = 0, 0

    def op_setuid(self, p: _Proc, lw: _Lwp, ins: Instr) -> None:
        uid = self.val(lw, ins.args[0])
        if p.pid == 1:
            self.violation(p, lw, "init calls setuid")
        if p.uid == 0 or uid == p.uid:
            p.uid = uid
            lw.regs[_RV], lw.regs[_ERR] = 0, 0
        else:
            lw.regs[_RV], lw.regs[_ERR] = -1, E.EPERM


def simulate(
    program: Program,
    seed: int = 0,
    *,
    maxprocs: int | None = None,
    maxlwps: int | None = None,
    max_steps: int = 200_000,
) -> SimResult:
    """Run ``program`` on a toy model of the language and report what happened.

    One instruction per step, the lwp chosen at random (``seed``) among those
    that can run.  Forks copy the process (vfork shares memory and blocks the
    parent until the child exits or execs); ``maxprocs`` (processes not yet
    reaped) and ``maxlwps`` (live lwps per process) make forks and lwp_create
    fail with rv = -1, err = EAGAIN.  ``wait`` reaps zombies (rv = pid, st =
    status) or fails with ECHILD; ``exec`` keeps one lwp (renumbered 1), clears
    registers and memory and resets caught signals.  Sleep, spin, yield and nop
    do nothing; a caught signal interrupts one blocked ``wait``/``lwp_wait``
    (EINTR), an ignored one does nothing, and a default-action one (or SIGKILL)
    terminates the target with status 128 + signal.  Orphans go to init while
    it lives.
    """
    sim = _Sim(program, random.Random(seed), maxprocs, maxlwps)
    return sim.run(max_steps)
