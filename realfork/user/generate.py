"""Random, terminating user programs.

``generate(seed, ...)`` returns a ``Program`` that mixes the system calls of
``isa.INSTRUCTIONS`` (everything but the /proc controls) and is built so that,
whatever the scheduling and whichever forks fail:

* it terminates: the only backward jumps are counter loops
  (``mov r7, N / loop: ... / sub r7, 1 / bne r7, 0, loop``, nothing in the body
  writes ``r7``) and reap loops (``reap: wait / bne rv, -1, reap /
  beq err, EINTR, reap``, which end once every child has ended);
* the process tree has at most ``max_procs`` processes counting init: every
  fork site is reached at most once per process (no forks in loops, except a
  "fork loop" whose children run ``exit`` at once), and the generator spends
  one unit of a process budget per child it can create;
* each process has at most ``max_lwps`` lwps: each process body creates
  ``lwp_create`` lwps only within its budget, and a forkall child's budget
  starts from what its parent may have had at the fork;
* every process (init included, unless ``init_may_exit_early``) reaps all of its
  children before it exits or execs.

Program shapes
--------------
``main:`` is init's body: a sequence of actions, then the epilogue (reap loop
if it forked, ``lwp_wait`` of each lwp it created, then ``exit 0`` or
``exec tail_N``).  Actions:

* user-mode work and simple calls: ``nop spin yield sleep getpid getppid
  lwp_self sigaction setuid dtrace_helper shmat load store mov add sub`` and
  ``usdt_enable 1, 0|1`` (init's USDT probes: pid 1 is always there), alone,
  in a counter loop, or under a forward branch (``beq/bne/blt ..., skip_N``
  and if/else ``jmp``);
* a fork site: ``fork1|forkall|vfork / beq rv, 0, child_N / mov r3, rv /
  blt rv, 0, done_N / [kill r3, SIGUSR1] [wait r3] / done_N:``.  ``child_N:``
  is a shorter body of the same kind (depth at most 3) with its own epilogue;
  a vfork child (``vchild_N:``) does only ``store``/``mov``/``add`` then
  ``exit`` or ``exec``.  A child the parent may ``kill`` gets ``sigaction
  SIGUSR1, catch|ignore`` set in the parent just before the fork (inherited);
  ``ignore`` when the child may exec or is a vfork child (both reset caught
  signals to the default), and such a child never sets SIGUSR1 back to default;
* a fork loop: ``mov r7, N / loop: fork / beq rv, 0, quick_N / ... / sub r7, 1
  / bne r7, 0, loop`` with ``quick_N: exit K``;
* ``lwp_create lwpbody_N`` (rv saved in ``r4`` and in memory word 48+k, so at
  most 16 per process body); the body is simple actions then ``lwp_exit``;
  ``lwp_suspend r4`` is always followed by ``lwp_continue r4``;
  ``lwp_wait r4`` may come early.  Chosen
  policy: a process ``lwp_wait``s every lwp it created before it exits or
  execs (if ``lwp_wait`` is allowed); lwps a forkall child inherited are left
  to ``exit``, which kills them;
* ``kill r3, SIGUSR1`` to a killable child, or ``sigaction SIGUSR1, catch /
  getpid / kill rv, SIGUSR1`` to itself; never SIGKILL;
* ``wait r3`` (then ``mov r3, 0``) or a bare ``wait``.

``exec`` targets ``tail_N:``: a few simple actions then ``exit``.  Registers:
``r0``-``r2`` scratch, ``r3`` last child pid, ``r4`` last lwp id, ``r5``
epilogue temporary, ``r7`` loop counter.  Memory: words 0..31 scratch, 48..63
lwp ids.  Every guarded use of a pid or lwp id checks it is >= 1, so failed
forks (rv = -1, EAGAIN) and failed lwp_creates are harmless.

The reference interpreter that checks these promises over many generated
programs is ``realfork.user.simulate``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from realfork.errors import BadInput
from realfork.user.isa import INSTRUCTIONS, Disposition
from realfork.user.parser import parse
from realfork.user.program import Program

__all__ = [
    "FORKS",
    "GENERATED_SYSCALLS",
    "IMPLIED",
    "STRUCTURAL_OPS",
    "allowed_syscalls",
    "generate",
    "generate_text",
]

FORKS = ("fork1", "forkall", "vfork")

GENERATED_SYSCALLS: frozenset[str] = frozenset({
    "fork1", "forkall", "vfork", "exit", "exec", "wait", "getpid", "getppid",
    "lwp_create", "lwp_exit", "lwp_self", "lwp_suspend", "lwp_continue", "lwp_wait",
    "sleep", "spin", "yield", "nop", "kill", "sigaction", "setuid",
    "dtrace_helper", "usdt_enable", "shmat",
})  # fmt: skip
"""Instructions ``syscalls=`` selects from (the /proc controls are never emitted)."""

STRUCTURAL_OPS: frozenset[str] = frozenset(
    {"load", "store", "mov", "add", "sub", "jmp", "beq", "bne", "blt"}
)
"""Register, memory and control-flow instructions, always allowed."""

IMPLIED: dict[str, tuple[str, ...]] = {
    "fork1": ("wait",),  # every parent reaps its children
    "forkall": ("wait",),
    "vfork": ("wait",),
    "lwp_create": ("lwp_exit",),  # created lwps end in lwp_exit
    "lwp_exit": ("lwp_create",),  # only created lwps call it
    "lwp_suspend": ("lwp_continue", "lwp_create"),  # ids come from lwp_create
    "lwp_continue": ("lwp_create",),
    "lwp_wait": ("lwp_create",),
    "kill": ("sigaction", "getpid"),  # catch/ignore first; getpid to signal itself
}
"""System calls a requested one needs for the program's structure.  Besides
these, ``exit`` is always allowed (every process ends with it) and ``setuid``
brings ``fork1`` unless ``fork1`` or ``forkall`` is requested (only children
change their uid)."""

MAX_DEPTH = 3
"""Deepest child (init is depth 0)."""
MAX_LENGTH = 50_000
"""Largest ``length`` accepted (programs hold at most 65,536 instructions)."""
SCRATCH_REGS = ("r0", "r1", "r2")
PID_REG, LWP_REG, TMP_REG, LOOP_REG = "r3", "r4", "r5", "r7"
SCRATCH_WORDS = 32
"""Memory words 0..31 are scratch for load/store."""
LWP_SLOT = 48
"""Memory words 48..63 hold the ids of the lwps a process body created."""
MAX_CREATES = 64 - LWP_SLOT

_C, _I, _D = Disposition.CATCH, Disposition.IGNORE, Disposition.DEFAULT


def allowed_syscalls(syscalls: Iterable[str] | None = None) -> frozenset[str]:
    """System calls a program generated with ``syscalls`` may contain.

    ``None`` means all of ``GENERATED_SYSCALLS``.  Otherwise the names given,
    closed under ``IMPLIED``, plus ``exit``.  Names from ``STRUCTURAL_OPS`` are
    accepted and always allowed anyway.  Raises ``BadInput`` for a name that is
    not an instruction or that the generator never emits.
    """
    if syscalls is None:
        return GENERATED_SYSCALLS
    if isinstance(syscalls, str | bytes):
        raise BadInput(f"syscalls is a string {syscalls!r}; expected an iterable of names")
    try:
        names = list(syscalls)
    except TypeError:
        raise BadInput(
            f"syscalls is {type(syscalls).__name__}; expected an iterable of names"
        ) from None
    want: set[str] = {"exit"}
    for name in names:
        if not isinstance(name, str) or name not in INSTRUCTIONS:
            raise BadInput(f"unknown system call {name!r} in syscalls")
        if name in STRUCTURAL_OPS:
            continue
        if name not in GENERATED_SYSCALLS:
            raise BadInput(f"the program generator never emits {name!r}")
        want.add(name)
    if "setuid" in want and not want & {"fork1", "forkall"}:
        want.add("fork1")
    todo = sorted(want)
    while todo:
        for extra in IMPLIED.get(todo.pop(), ()):
            if extra not in want:
                want.add(extra)
                todo.append(extra)
    return frozenset(want)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput(f"{name} is {type(value).__name__}; expected an integer")
    if value < low or (high is not None and value > high):
        top = f"..{high}" if high is not None else " or more"
        raise BadInput(f"{name} is {value}; expected {low}{top}")
    return value


# ------------------------------------------------------------------ generator


@dataclass
class _Body:
    """What the generator knows statically about the code it is emitting."""

    kind: str  # "init", "child", "lwp" or "tail"
    lines: list[str]
    depth: int = 0
    is_child: bool = False  # setuid allowed
    killable: bool = False  # the parent may send SIGUSR1
    ends_exec: bool = False
    usr1: Disposition = _D
    base_lwps: int = 1  # lwps the process may have when the body starts
    created: int = 0  # lwp_create sites so far
    forked: bool = False
    pid_valid: bool = False  # r3 holds a pid from this body's own fork (or -1)
    pid_killable: bool = False
    lwp_valid: bool = False  # r4 holds an id from this body's own lwp_create (or -1)

    def usr1_choices(self) -> tuple[Disposition, ...]:
        """SIGUSR1 dispositions this body may set."""
        if self.kind in ("lwp", "tail"):
            return ()
        if not self.killable:
            return (_C, _I, _D)
        return (_I,) if self.ends_exec else (_C, _I)


@dataclass
class _Tail:
    label: str
    setuid: bool
    status: int


class _Generator:
    def __init__(
        self,
        rng: random.Random,
        max_procs: int,
        max_lwps: int,
        length: int,
        allowed: frozenset[str],
        init_may_exit_early: bool,
    ) -> None:
        self.rng = rng
        self.procs_left = max_procs - 1
        self.max_lwps = max_lwps
        self.length = length
        self.allowed = allowed
        self.early = init_may_exit_early
        self.size = 0  # instructions emitted
        self.nlabels = 0
        self.sections: list[list[str]] = []
        self.tails: list[_Tail] = []
        self.lwp_bodies: list[str] = []

    # -- emission helpers

    def can(self, *ops: str) -> bool:
        return all(op in self.allowed for op in ops)

    def label(self, kind: str) -> str:
        self.nlabels += 1
        return f"{kind}_{self.nlabels}"

    def emit(self, b: _Body, text: str) -> None:
        b.lines.append(f"    {text}")
        self.size += 1

    @staticmethod
    def mark(b: _Body, label: str, comment: str = "") -> None:
        b.lines.append(f"{label}:" + (f"  ; {comment}" if comment else ""))

    def scratch(self) -> str:
        return self.rng.choice(SCRATCH_REGS)

    def value(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return str(self.rng.randint(-3, 20))
        return self.rng.choice((*SCRATCH_REGS, "rv", "err"))

    # -- whole program

    def program(self) -> str:
        init = _Body("init", ["main:"])
        init.ends_exec = self.can("exec") and self.rng.random() < 0.2
        while self.size < self.length:
            self.action(init)
        reap = not (self.early and self.rng.random() < 0.5)
        self.epilogue(init, status=0, reap=reap)
        lines = list(init.lines)
        for section in self.sections:
            lines.append("")
            lines.extend(section)
        return "\n".join(lines) + "\n"

    def epilogue(self, b: _Body, status: int, reap: bool = True) -> None:
        """Reap children, wait for created lwps, then exit or exec."""
        if b.forked and reap:
            loop = self.label("reap")
            self.mark(b, loop, "until ECHILD")
            self.emit(b, "wait")
            self.emit(b, f"bne rv, -1, {loop}")
            self.emit(b, f"beq err, EINTR, {loop}")
        if b.created and self.can("lwp_wait"):
            for k in range(b.created):
                skip = self.label("skip")
                self.emit(b, f"load {TMP_REG}, {LWP_SLOT + k}")
                self.emit(b, f"blt {TMP_REG}, 1, {skip}")
                self.emit(b, f"lwp_wait {TMP_REG}")
                self.mark(b, skip)
        if b.ends_exec:
            self.emit(b, f"exec {self.tail(b.is_child, status)}")
        else:
            self.emit(b, f"exit {status}")

    # -- actions of a process body

    def action(self, b: _Body) -> None:
        """Emit one randomly chosen action into process body ``b``."""
        rng = self.rng
        forks = [op for op in FORKS if self.can(op)]
        choices: list[tuple[float, Callable[[_Body], None]]] = [
            (6.0, self.simple),
            (1.5, self.loop),
            (1.5, self.skip),
        ]
        if forks and self.procs_left >= 1 and b.depth < MAX_DEPTH:
            choices.append((4.0 if b.depth == 0 else 2.0, self.fork_site))
        if forks and self.procs_left >= 2:
            choices.append((0.7, self.fork_loop))
        if (
            self.can("lwp_create")
            and b.base_lwps + b.created < self.max_lwps
            and b.created < MAX_CREATES
        ):
            choices.append((2.5, self.lwp_create))
        if b.lwp_valid:
            if self.can("lwp_suspend"):
                choices.append((1.5, self.suspend))
            if self.can("lwp_continue"):
                choices.append((0.4, self.cont))
            if self.can("lwp_wait"):
                choices.append((0.8, self.lwp_wait))
        if self.can("kill"):
            if b.pid_valid and b.pid_killable:
                choices.append((2.0, self.kill_child))
            if _C in b.usr1_choices():
                choices.append((0.5, self.kill_self))
        if self.can("wait"):
            if b.pid_valid:
                choices.append((0.8, self.wait_pid))
            choices.append((0.5, self.wait_any))
        weights = [w for w, _ in choices]
        rng.choices([f for _, f in choices], weights)[0](b)

    def simple(self, b: _Body) -> None:
        """One instruction of user-mode work or a non-blocking system call."""
        rng = self.rng
        options: list[str] = ["load", "store", "mov", "add", "sub"]
        options += [
            op
            for op in ("nop", "spin", "yield", "sleep", "getpid", "getppid", "lwp_self")
            if self.can(op)
        ]
        if self.can("sigaction"):
            options.append("sigaction")
        if self.can("setuid") and b.is_child:
            options.append("setuid")
        options += [op for op in ("dtrace_helper", "shmat", "usdt_enable") if self.can(op)]
        op = rng.choice(options)
        if op in ("nop", "yield", "getpid", "getppid", "lwp_self", "dtrace_helper", "shmat"):
            self.emit(b, op)
        elif op == "usdt_enable":
            self.emit(b, f"usdt_enable 1, {rng.randint(0, 1)}")
        elif op == "sleep":
            self.emit(b, f"sleep {rng.randint(0, 20)}")
        elif op == "spin":
            self.emit(b, f"spin {rng.randint(1, 40)}")
        elif op == "setuid":
            self.emit(b, f"setuid {rng.randint(0, 3)}")
        elif op == "load":
            self.emit(b, f"load {self.scratch()}, {rng.randrange(SCRATCH_WORDS)}")
        elif op == "store":
            self.emit(b, f"store {rng.randrange(SCRATCH_WORDS)}, {self.value()}")
        elif op in ("mov", "add", "sub"):
            self.emit(b, f"{op} {self.scratch()}, {self.value()}")
        else:
            self.sigaction(b)

    def sigaction(self, b: _Body) -> None:
        rng = self.rng
        usr1 = b.usr1_choices()
        signals = ["SIGUSR2", "SIGHUP", "SIGCHLD"] + (["SIGUSR1"] * 2 if usr1 else [])
        sig = rng.choice(signals)
        if sig == "SIGUSR1":
            disp = rng.choice(usr1)
            b.usr1 = disp
        elif sig == "SIGCHLD":  # ignoring SIGCHLD would make children unwaitable
            disp = rng.choice((_C, _D))
        else:
            disp = rng.choice((_C, _I, _D))
        self.emit(b, f"sigaction {sig}, {disp.value}")

    def simple_block(self, b: _Body) -> None:
        """A simple action, sometimes inside a counter loop."""
        if self.rng.random() < 0.2:
            self.loop(b)
        else:
            self.simple(b)

    def loop(self, b: _Body) -> None:
        """``mov r7, N / loop: simple... / sub r7, 1 / bne r7, 0, loop``."""
        top = self.label("loop")
        self.emit(b, f"mov {LOOP_REG}, {self.rng.randint(1, 4)}")
        self.mark(b, top)
        for _ in range(self.rng.randint(1, 3)):
            self.simple(b)
        self.emit(b, f"sub {LOOP_REG}, 1")
        self.emit(b, f"bne {LOOP_REG}, 0, {top}")

    def skip(self, b: _Body) -> None:
        """A forward branch over simple actions, or an if/else."""
        rng = self.rng
        cond = rng.choice(("beq", "bne", "blt"))
        left = rng.choice((*SCRATCH_REGS, "rv", "err"))
        other = self.label("else")
        self.emit(b, f"{cond} {left}, {rng.randint(-1, 5)}, {other}")
        for _ in range(rng.randint(1, 3)):
            self.simple(b)
        if rng.random() < 0.3:
            end = self.label("endif")
            self.emit(b, f"jmp {end}")
            self.mark(b, other)
            for _ in range(rng.randint(1, 2)):
                self.simple(b)
            self.mark(b, end)
        else:
            self.mark(b, other)

    def fork_site(self, b: _Body) -> None:
        """Create one child, branch to its block, optionally signal or wait it."""
        rng = self.rng
        op = rng.choice([f for f in FORKS if self.can(f)])
        self.procs_left -= 1
        child = _Body(
            "child",
            [],
            depth=b.depth + 1,
            is_child=True,
            base_lwps=b.base_lwps + b.created if op == "forkall" else 1,
        )
        child.ends_exec = self.can("exec") and rng.random() < (0.5 if op == "vfork" else 0.25)
        killable = self.can("kill") and rng.random() < 0.45
        if killable:
            # exec and vfork reset caught signals to SIG_DFL: only ignore survives
            keep = (_I,) if child.ends_exec or op == "vfork" else (_C, _I)
            usable = [d for d in keep if d in b.usr1_choices()]
            if usable:
                disp = rng.choice(usable)
                self.emit(b, f"sigaction SIGUSR1, {disp.value}")
                b.usr1 = disp
            else:
                killable = False
        child.killable = killable
        child.usr1 = b.usr1
        if op == "vfork" and child.usr1 == _C:
            child.usr1 = _D
        target = self.label("vchild" if op == "vfork" else "child")
        done = self.label("done")
        self.emit(b, op)
        self.emit(b, f"beq rv, 0, {target}")
        self.emit(b, f"mov {PID_REG}, rv")
        self.emit(b, f"blt rv, 0, {done}")
        waited = False
        if killable and rng.random() < 0.5:
            self.emit(b, f"kill {PID_REG}, SIGUSR1")
        if self.can("wait") and rng.random() < 0.2:
            self.emit(b, f"wait {PID_REG}")
            self.emit(b, f"mov {PID_REG}, 0")
            waited = True
        self.mark(b, done)
        b.forked = True
        b.pid_valid = not waited
        b.pid_killable = killable
        if op == "vfork":
            self.vfork_child(child, target)
        else:
            self.child(child, target, op)

    def child(self, c: _Body, target: str, op: str) -> None:
        """The block a fork1 or forkall child runs."""
        self.sections.append(c.lines)  # placed before what it creates: branches go forward
        self.mark(c, target, f"{op} child, depth {c.depth}")
        for _ in range(self.rng.randint(1, 5)):
            if self.size >= self.length:
                break
            self.action(c)
        self.epilogue(c, status=self.rng.randint(0, 7))

    def vfork_child(self, c: _Body, target: str) -> None:
        """A vfork child: only store/mov/add, then exit or exec."""
        rng = self.rng
        self.sections.append(c.lines)
        self.mark(c, target, f"vfork child, depth {c.depth}: store/mov/add only")
        for _ in range(rng.randint(0, 3)):
            op = rng.choice(("store", "mov", "add"))
            if op == "store":
                self.emit(c, f"store {rng.randrange(SCRATCH_WORDS)}, {self.value()}")
            else:
                self.emit(c, f"{op} {self.scratch()}, {self.value()}")
        if c.ends_exec:
            self.emit(c, f"exec {self.tail(True, rng.randint(0, 7))}")
        else:
            self.emit(c, f"exit {rng.randint(0, 7)}")

    def fork_loop(self, b: _Body) -> None:
        """N forks in a counter loop; each child exits at once."""
        rng = self.rng
        op = rng.choice([f for f in FORKS if self.can(f)])
        n = rng.randint(2, min(3, self.procs_left))
        self.procs_left -= n
        top, quick, cont = self.label("loop"), self.label("quick"), self.label("cont")
        self.emit(b, f"mov {LOOP_REG}, {n}")
        self.mark(b, top, f"{n} x {op}, children exit at once")
        self.emit(b, op)
        self.emit(b, f"beq rv, 0, {quick}")
        self.emit(b, f"mov {PID_REG}, rv")
        waited = rng.random() < 0.5
        if waited:
            self.emit(b, f"blt rv, 0, {cont}")
            self.emit(b, f"wait {PID_REG}")
            self.mark(b, cont)
        self.emit(b, f"sub {LOOP_REG}, 1")
        self.emit(b, f"bne {LOOP_REG}, 0, {top}")
        q = _Body("child", [])
        self.mark(q, quick, f"{op} child of a fork loop")
        self.emit(q, f"exit {rng.randint(0, 7)}")
        self.sections.append(q.lines)
        b.forked = True
        b.pid_valid = not waited
        b.pid_killable = False

    def lwp_create(self, b: _Body) -> None:
        """``lwp_create`` a new or reused lwp body; keep its id in r4 and memory."""
        rng = self.rng
        if self.lwp_bodies and rng.random() < 0.3:
            target = rng.choice(self.lwp_bodies)
        else:
            target = self.label("lwpbody")
            lw = _Body("lwp", [])
            self.sections.append(lw.lines)
            self.mark(lw, target, "lwp body")
            for _ in range(rng.randint(1, 4)):
                self.simple_block(lw)
            self.emit(lw, "lwp_exit")
            self.lwp_bodies.append(target)
        self.emit(b, f"lwp_create {target}")
        self.emit(b, f"mov {LWP_REG}, rv")
        self.emit(b, f"store {LWP_SLOT + b.created}, rv")
        b.created += 1
        b.lwp_valid = True

    def suspend(self, b: _Body) -> None:
        skip = self.label("skip")
        self.emit(b, f"blt {LWP_REG}, 1, {skip}")
        self.emit(b, f"lwp_suspend {LWP_REG}")
        for _ in range(self.rng.randint(0, 2)):
            self.simple(b)
        self.emit(b, f"lwp_continue {LWP_REG}")
        self.mark(b, skip)

    def cont(self, b: _Body) -> None:
        skip = self.label("skip")
        self.emit(b, f"blt {LWP_REG}, 1, {skip}")
        self.emit(b, f"lwp_continue {LWP_REG}")
        self.mark(b, skip)

    def lwp_wait(self, b: _Body) -> None:
        skip = self.label("skip")
        self.emit(b, f"blt {LWP_REG}, 1, {skip}")
        self.emit(b, f"lwp_wait {LWP_REG}")
        self.mark(b, skip)

    def kill_child(self, b: _Body) -> None:
        skip = self.label("skip")
        self.emit(b, f"blt {PID_REG}, 1, {skip}")
        self.emit(b, f"kill {PID_REG}, SIGUSR1")
        self.mark(b, skip)

    def kill_self(self, b: _Body) -> None:
        self.emit(b, "sigaction SIGUSR1, catch")
        b.usr1 = _C
        self.emit(b, "getpid")
        self.emit(b, "kill rv, SIGUSR1")

    def wait_pid(self, b: _Body) -> None:
        skip = self.label("skip")
        self.emit(b, f"blt {PID_REG}, 1, {skip}")
        self.emit(b, f"wait {PID_REG}")
        self.emit(b, f"mov {PID_REG}, 0")
        self.mark(b, skip)
        b.pid_valid = False

    def wait_any(self, b: _Body) -> None:
        self.emit(b, "wait")
        b.pid_valid = False  # r3's child may be the one reaped

    # -- exec tails

    def tail(self, for_child: bool, status: int) -> str:
        """Label of an exec tail: simple actions then ``exit status``."""
        rng = self.rng
        fits = [t for t in self.tails if for_child or (not t.setuid and t.status == status)]
        if fits and rng.random() < 0.4:
            return rng.choice(fits).label
        label = self.label("tail")
        t = _Body("tail", [], is_child=for_child)
        self.sections.append(t.lines)
        self.mark(t, label, "exec tail")
        for _ in range(rng.randint(1, 4)):
            self.simple_block(t)
        self.emit(t, f"exit {status}")
        has_setuid = any(line.split()[0] == "setuid" for line in t.lines[1:])
        self.tails.append(_Tail(label, has_setuid, status))
        return label


def generate_text(
    seed: int,
    *,
    max_procs: int = 6,
    max_lwps: int = 4,
    length: int = 40,
    syscalls: Iterable[str] | None = None,
    init_may_exit_early: bool = False,
) -> str:
    """The text of ``generate(...)`` with a comment header naming the options."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise BadInput(f"seed is {type(seed).__name__}; expected an integer")
    _check_int("max_procs", max_procs, 1)
    _check_int("max_lwps", max_lwps, 1)
    _check_int("length", length, 0, MAX_LENGTH)
    if not isinstance(init_may_exit_early, bool):
        raise BadInput(
            f"init_may_exit_early is {type(init_may_exit_early).__name__}; expected a bool"
        )
    if syscalls is not None and not isinstance(syscalls, str | bytes):
        try:
            syscalls = list(syscalls)
        except TypeError:
            pass  # allowed_syscalls says what is wrong
    allowed = allowed_syscalls(syscalls)
    if syscalls is None:
        requested = "all"
    else:
        given = ",".join(sorted(set(syscalls))) or "none"
        requested = f"{given} (allowed: {','.join(sorted(allowed))})"
    gen = _Generator(
        random.Random(seed), max_procs, max_lwps, length, allowed, init_may_exit_early
    )
    body = gen.program()
    header = (
        "; realfork generated program\n"
        f"; seed={seed} max_procs={max_procs} max_lwps={max_lwps} length={length}"
        f" init_may_exit_early={init_may_exit_early}\n"
        f"; syscalls={requested}\n"
    )
    return header + body


def generate(
    seed: int,
    *,
    max_procs: int = 6,
    max_lwps: int = 4,
    length: int = 40,
    syscalls: Iterable[str] | None = None,
    init_may_exit_early: bool = False,
) -> Program:
    """A random terminating program; the same arguments give the same program.

    ``max_procs`` bounds the processes ever created (init included), ``max_lwps``
    the lwps of each process, ``length`` is the rough number of instructions
    (epilogues may add a few), ``syscalls`` restricts the system calls (see
    ``allowed_syscalls``), and ``init_may_exit_early`` lets init exit without
    reaping its children.  Raises ``BadInput`` for bad options.
    """
    return parse(
        generate_text(
            seed,
            max_procs=max_procs,
            max_lwps=max_lwps,
            length=length,
            syscalls=syscalls,
            init_may_exit_early=init_may_exit_early,
        )
    )
