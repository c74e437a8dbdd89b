"""The stressors: user programs that hammer one part of the kernel each.

Every stressor is a loop in realfork's instruction set, generated with its
labels prefixed (``s3_loop``) so that any number of instances of any
stressors compose into one init program: init forks one process per
instance (retrying while forks fail), then reaps until the runner ends the
run.  An instance never ends by itself; the runner stops it when the time or
the operation budget is spent.

A *bogo op* (stress-ng's unit) of each stressor is one probe event fired on
behalf of one of its processes, so the runner counts operations from the
probe stream and a test can check the count against the kernel's counters:

========  ===============================================================
fork      ``proc:::create`` of a fork1 child
forkall   ``proc:::create`` of a forkall child
vfork     ``proc:::create`` of a vfork child
exec      ``proc:::exec``
lwp       ``proc:::lwp-create``
signal    ``syscall:::return`` of ``kill``
proc      ``syscall:::return`` of ``prlock`` or ``pragent``
usdt      ``syscall:::return`` of ``usdt_enable``
probe     ``syscall:::return`` of ``kill`` (signal 0, at the pid frontier)
bomb      ``proc:::create`` of a fork1 child, or ``proc:::fork-fail``
mix       ``syscall:::return`` of any system call
zone      ``syscall:::return`` of ``coreadm`` or ``zone_create``
========  ===============================================================
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import BadInput
from ..kernel.systab import SYSNUM as _SYS
from ..user.parser import format_program
from ..user.program import Instr, LabelRef, Program

FORK_KINDS = {"forkall": 0, "fork1": 1, "vfork": 2}  # proc:::create's kind argument


@dataclass(frozen=True)
class Stressor:
    name: str
    help: str
    options: dict[str, int]  # option -> default
    build: Callable[[str, dict[str, int], random.Random], list[str]]
    op_probe: str  # the probe that counts one bogo op
    op_kinds: tuple[int, ...] = ()  # proc:::create kinds, or syscall numbers
    also_op: str = ""  # another probe that counts as a bogo op, whatever its arguments
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # option -> (low, high)

    def is_op(self, name: str, args: tuple[int, ...]) -> bool:
        """Is probe ``name`` with ``args``, fired for one of this stressor's
        processes, one bogo op?"""
        if name == self.also_op:
            return True
        if name != self.op_probe:
            return False
        if name == "proc:::create":
            return args[1] in self.op_kinds
        if name == "syscall:::return" and self.op_kinds:
            return args[0] in self.op_kinds
        return True


def _stressor(name: str, help: str, opts: dict[str, tuple[int, int, int]],
              build: Callable[[str, dict[str, int], random.Random], list[str]],
              op_probe: str, op_kinds: tuple[int, ...] = (), also_op: str = "") -> Stressor:
    """A stressor whose options are given as ``option: (default, low, high)``."""
    for opt, (default, low, high) in opts.items():
        assert low <= default <= high, (name, opt)
    return Stressor(name, help, {k: v[0] for k, v in opts.items()}, build, op_probe, op_kinds,
                    also_op, {k: (v[1], v[2]) for k, v in opts.items()})


def _retry_fork(P: str, call: str, child: str) -> list[str]:
    """``call``; a child jumps to ``child``; a failure sleeps a tick and retries."""
    return [
        f"{P}again:",
        f"    {call}",
        f"    beq rv, 0, {child}",
        f"    blt rv, 0, {P}fail",
    ]


def _fail_block(P: str, back: str, ms: int = 1) -> list[str]:
    return [f"{P}fail:", f"    sleep {max(ms, 1)}", f"    jmp {back}"]


def _fork(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    return [
        f"{P}main:",
        *_retry_fork(P, "fork1", f"{P}child"),
        "    wait rv",
        f"    jmp {P}again",
        *_fail_block(P, f"{P}again"),
        f"{P}child:",
        "    exit 0",
    ]


def _forkall(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    out = [f"{P}main:"]
    for i in range(o["lwps"]):
        # some lwps sleep interruptibly (forkall interrupts them), some compute
        out.append(f"    lwp_create {P}sleeper" if i < o["sleepers"] else
                   f"    lwp_create {P}spinner")
    out += [
        *_retry_fork(P, "forkall", f"{P}child"),
        "    wait rv",
        f"    jmp {P}again",
        *_fail_block(P, f"{P}again", o["fail_ms"]),  # how long to wait after EAGAIN
        f"{P}child:",
        "    exit 0",  # the clones of the other lwps go with it
        f"{P}sleeper:",
        "    sleep 20",
        f"    jmp {P}sleeper",
        f"{P}spinner:",
        "    spin 2000",
        "    yield",
        f"    jmp {P}spinner",
    ]
    return out


def _vfork(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    # r2 alternates: the child execs when it is 1, exits when it is 0 (every
    # ``exec_every``-th child execs; 0: never)
    every = o["exec_every"]
    out = [f"{P}main:"]
    if o["suspender"]:
        # another lwp keeps suspending and continuing the vforking lwp (lwpid 1)
        out.append(f"    lwp_create {P}suspender")
    out.append("    mov r2, 0")
    if o["sibling_ms"]:
        # a short-lived sibling, forked first, exits while the parent waits in vfork
        out += [f"{P}sibling:", "    fork1", f"    beq rv, 0, {P}sibexit",
                f"    blt rv, 0, {P}sibfail", "    mov r4, rv", f"    jmp {P}again",
                f"{P}sibfail:", "    sleep 1", f"    jmp {P}sibling"]
    out += [
        *_retry_fork(P, "vfork", f"{P}child"),
        "    wait rv",
        *(["    wait r4"] if o["sibling_ms"] else []),
        "    add r2, 1",
        f"    blt r2, {max(every, 1)}, {P}next",
        "    mov r2, 0",
        f"{P}next:",
        f"    jmp {P}{'sibling' if o['sibling_ms'] else 'again'}",
        *_fail_block(P, f"{P}again"),
        f"{P}child:",
        "    store 0, 1",  # the parent's memory, borrowed
        *([f"    spin {o['child_spin']}"] if o["child_spin"] else []),
        f"    bne r2, {max(every, 1) - 1}, {P}cexit" if every else f"    jmp {P}cexit",
        f"    exec {P}image",
        f"{P}cexit:",
        "    exit 0",
        f"{P}image:",
        *([f"    sleep {o['image_ms']}"] if o["image_ms"] else []),  # the new image runs on
        "    exit 0",
    ]
    if o["sibling_ms"]:
        out += [f"{P}sibexit:", f"    sleep {o['sibling_ms']}", "    exit 0"]
    if o["suspender"]:
        out += [f"{P}suspender:", "    mov r5, 1", "    lwp_suspend r5", "    lwp_continue r5",
                "    yield", f"    jmp {P}suspender"]
    return out


def _exec(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    images = [f"{P}image{i}" for i in range(o["chain"])]
    out = [
        f"{P}main:",
        *_retry_fork(P, "fork1", f"{P}child"),
        "    wait rv",
        f"    jmp {P}again",
        *_fail_block(P, f"{P}again"),
        f"{P}child:",
    ]
    for img in images:
        out += [f"    exec {img}", f"{img}:"]
    out.append("    exit 0")
    return out


def _lwp(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    return [
        f"{P}main:",
        f"{P}again:",
        f"    lwp_create {P}worker",
        f"    blt rv, 0, {P}fail",
        "    mov r3, rv",
        "    lwp_suspend r3",
        "    lwp_continue r3",
        "    lwp_wait r3",
        f"    jmp {P}again",
        *_fail_block(P, f"{P}again"),
        f"{P}worker:",
        f"    spin {o['spin']}",
        "    lwp_exit",
    ]


def _spawn_victims(P: str, n: int, body: str) -> list[str]:
    """Fork ``n`` victims running ``body``; their pids in r1..rn."""
    out = []
    for v in range(1, n + 1):
        out += [f"{P}spawn{v}:", "    fork1", f"    beq rv, 0, {body}",
                f"    blt rv, 0, {P}spawnfail{v}", f"    mov r{v}, rv", f"    jmp {P}spawned{v}",
                f"{P}spawnfail{v}:", "    sleep 1", f"    jmp {P}spawn{v}", f"{P}spawned{v}:"]
    return out


def _signal(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    n = o["victims"]
    out = [f"{P}main:", "    sigaction SIGUSR1, catch", *_spawn_victims(P, n, f"{P}victim"),
           f"{P}loop:"]
    # an unrolled, seeded sequence of sends at random victims; a killed
    # victim is reaped and replaced
    for step in range(16):
        v = rng.randint(1, n)
        if rng.random() < o["kill_percent"] / 100:
            out += [f"    kill r{v}, SIGKILL", f"    wait r{v}",
                    f"{P}respawn{step}:", "    fork1", f"    beq rv, 0, {P}victim",
                    f"    blt rv, 0, {P}respawnfail{step}", f"    mov r{v}, rv",
                    f"    jmp {P}respawned{step}",
                    f"{P}respawnfail{step}:", "    sleep 1", f"    jmp {P}respawn{step}",
                    f"{P}respawned{step}:"]
        else:
            out.append(f"    kill r{v}, SIGUSR1")
    out += [f"    jmp {P}loop", f"{P}victim:", "    sleep 5", f"    jmp {P}victim"]
    return out


def _proc(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    n = o["victims"]
    # a prlock of itself opens /proc first: the victims inherit the open file
    out = [f"{P}main:", "    getpid", "    prlock rv, 0", *_spawn_victims(P, n, f"{P}victim"),
           f"{P}loop:"]
    for _ in range(8):
        v = rng.randint(1, n)
        out += [f"    prlock r{v}, {o['hold_ms']}", f"    pragent r{v}"]
    out += [
        f"    jmp {P}loop",
        # a victim forks and reaps (the agent's fork1 children exit at once)
        f"{P}victim:",
        "    fork1",
        f"    beq rv, 0, {P}vchild",
        "    wait",
        "    sleep 1",
        f"    jmp {P}victim",
        f"{P}vchild:",
        "    exit 0",
    ]
    return out


def _usdt(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    n = o["victims"]
    # Registered before the victims are forked, the helper provider and the
    # shared memory attachment reach every victim (and every victim's child)
    # through the fork hooks: each fork runs shmfork and the helpers fork.
    out = [f"{P}main:", "    dtrace_helper", "    shmat", *_spawn_victims(P, n, f"{P}victim"),
           f"{P}loop:"]
    # a DTrace consumer enables and tears down the victims' USDT probes, in a
    # seeded order, while the victims fork
    for _ in range(8):
        v = rng.randint(1, n)
        out += [f"    usdt_enable r{v}, 1", f"    usdt_enable r{v}, 0"]
    out += [
        f"    jmp {P}loop",
        f"{P}victim:",
        "    fork1",
        f"    beq rv, 0, {P}vchild",
        f"    blt rv, 0, {P}vfail",
        "    wait rv",
        f"    jmp {P}victim",
        f"{P}vfail:",
        "    sleep 1",
        f"    jmp {P}victim",
        f"{P}vchild:",
        "    exit 0",
    ]
    return out


def _probe(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    # Follow the pid frontier: a child of our own says where it is; then look
    # up the next pids (kill PID, 0: a /proc-style lookup that sends nothing)
    # while other processes' forks assign them, so that some lookups meet a
    # child that getproc is still setting up.
    return [
        f"{P}main:",
        *_retry_fork(P, "fork1", f"{P}child"),
        "    mov r3, rv",
        "    mov r6, rv",
        f"{P}next:",
        "    add r6, 1",
        "    mov r7, 0",
        f"{P}look:",
        "    kill r6, 0",
        f"    beq rv, 0, {P}next",  # it exists (or is being created): the next one
        f"    bne err, ESRCH, {P}next",  # another user's: exists too
        "    add r7, 1",
        f"    blt r7, {max(o['tries'], 1)}, {P}look",
        "    wait r3",  # nobody took it: start again from a new child of ours
        f"    jmp {P}again",
        *_fail_block(P, f"{P}again"),
        f"{P}child:",
        "    exit 0",
    ]


def _bomb(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    return [
        f"{P}main:",
        f"    setuid {o['uid']}",  # its own per-user process count (maxup)
        f"{P}again:",
        "    fork1",
        f"    beq rv, 0, {P}child",
        f"    blt rv, 0, {P}reap",
        f"    jmp {P}again",
        f"{P}reap:",  # EAGAIN: reap every child, then start over
        "    wait",
        f"    bne rv, -1, {P}reap",
        f"    beq err, EINTR, {P}reap",
        f"    jmp {P}again",
        f"{P}child:",
        f"    sleep {o['child_ms']}",
        "    exit 0",
    ]


def _mix(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    from ..user.generate import generate

    gen = generate(rng.randrange(1 << 30), max_procs=o["procs"], max_lwps=o["lwps"],
                   length=o["length"])
    body = format_program(relabel(gen, P + "g_")).splitlines()
    return [
        f"{P}main:",
        *_retry_fork(P, "fork1", f"{P}g_main"),
        "    wait rv",
        f"    jmp {P}again",
        *_fail_block(P, f"{P}again"),
        *body,
    ]


def _zone(P: str, o: dict[str, int], rng: random.Random) -> list[str]:
    # A victim forks and reaps without end while we change its core-file
    # pattern (coreadm PID, N: each call frees the victim's previous pattern
    # and content); between rounds we create a zsched (zone_create, newproc
    # from a user thread) and reap it, unless zscheds is 0.  When
    # zone_create fails (the stress config arms the newproc.lwp_create fault
    # site, fail_percent) we fork and reap a child at once: that walks our
    # child and orphan lists.
    out = [f"{P}main:", *_spawn_victims(P, 1, f"{P}victim"), "    mov r2, 1", f"{P}loop:"]
    for _ in range(max(o["coreadms"], 0)):
        out += ["    coreadm r1, r2", "    add r2, 1"]
    if not o["zscheds"]:
        out += [*(["    sleep 1"] if not o["coreadms"] else []), f"    jmp {P}loop"]
    out += [
        "    zone_create",
        f"    blt rv, 0, {P}zfail",
        "    wait rv",
        f"    jmp {P}loop",
        f"{P}zfail:",
        "    fork1",
        f"    beq rv, 0, {P}zchild",
        f"    blt rv, 0, {P}loop",
        "    wait rv",
        f"    jmp {P}loop",
        f"{P}zchild:",
        "    exit 0",
        f"{P}victim:",
        "    fork1",
        f"    beq rv, 0, {P}vchild",
        f"    blt rv, 0, {P}victim",
        "    wait rv",
        f"    jmp {P}victim",
        f"{P}vchild:",
        "    exit 0",
    ]
    return out


def relabel(prog: Program, prefix: str) -> Program:
    """``prog`` with every label renamed ``prefix + name``."""
    code = tuple(
        Instr(ins.op, tuple(LabelRef(prefix + a.name) if isinstance(a, LabelRef) else a
                            for a in ins.args))
        for ins in prog.code)
    return Program(code, {prefix + k: v for k, v in prog.labels.items()}, prog.entry)


# Every option's range is chosen so that one instance stays a small program
# (a few thousand instructions at most: the whole init program must fit the
# kernel's 1 MiB and 65,536 instructions) and so that nothing it waits for lasts
# long next to a run's --timeout: a delay at most 1 s (1,000 ms), a spin at most
# 1,000,000 steps (a few tenths of a second, and an AST interrupts it), lwps per
# process at most 64 (each is an OS thread; the stress kernel has 1,024).
_MS = 1000  # longest delay of any option, in milliseconds
_SPIN = 1_000_000  # longest spin, in steps
# A new image's sleep is the exception: a long-lived exec'd child is how a lost
# vfork wake-up shows (its parent waits as long as the image runs), and the
# end-of-run SIGKILL interrupts the sleep, so --timeout still holds.
_IMAGE_MS = 60_000

STRESSORS: dict[str, Stressor] = {s.name: s for s in (
    _stressor("fork", "fork1, exit and wait", {}, _fork, "proc:::create",
              (FORK_KINDS["fork1"],)),
    _stressor("forkall", "forkall from a process whose other lwps sleep or compute",
              {"lwps": (3, 0, 64), "sleepers": (2, 0, 64), "fail_ms": (1, 0, _MS)},
              _forkall, "proc:::create", (FORK_KINDS["forkall"],)),
    _stressor("vfork", "vfork, then the child execs or exits",
              {"exec_every": (2, 0, 1000), "image_ms": (0, 0, _IMAGE_MS),
               "child_spin": (0, 0, _SPIN), "sibling_ms": (0, 0, _MS), "suspender": (0, 0, 1)},
              _vfork, "proc:::create", (FORK_KINDS["vfork"],)),
    _stressor("exec", "fork1 children that exec a chain of images", {"chain": (2, 1, 1000)},
              _exec, "proc:::exec"),
    _stressor("lwp", "lwp_create, lwp_suspend, lwp_continue, lwp exit and lwp_wait",
              {"spin": (200, 0, _SPIN)}, _lwp, "proc:::lwp-create"),
    _stressor("signal", "SIGUSR1 and SIGKILL at random victims, which are replaced",
              {"victims": (3, 1, 6), "kill_percent": (20, 0, 100)}, _signal, "syscall:::return",
              (_SYS["kill"],)),
    # hold_ms: P_PR_LOCK is held that long while victims wait for it; it must
    # also stay under a quarter of the deadlock timeout (checked by StressConfig)
    _stressor("proc", "a /proc controller: P_PR_LOCK and agent-lwp forks on forking victims",
              {"victims": (2, 1, 6), "hold_ms": (2, 0, _MS)}, _proc, "syscall:::return",
              (_SYS["prlock"], _SYS["pragent"])),
    _stressor("usdt", "a DTrace consumer enables and tears down the USDT probes of victims "
              "that fork with helpers and shared memory", {"victims": (2, 1, 6)}, _usdt,
              "syscall:::return", (_SYS["usdt_enable"],)),
    _stressor("probe", "looks up the pids other forks are about to assign (kill PID, 0)",
              {"tries": (200, 0, 100_000)}, _probe, "syscall:::return", (_SYS["kill"],)),
    _stressor("bomb", "forks until EAGAIN, then reaps them all",
              {"uid": (1000, 0, 2_147_483_646), "child_ms": (50, 0, _MS)}, _bomb,
              "proc:::create", (FORK_KINDS["fork1"],), also_op="proc:::fork-fail"),
    _stressor("mix", "generated programs mixing every system call",
              {"procs": (4, 1, 32), "lwps": (3, 1, 16), "length": (30, 1, 1000)}, _mix,
              "syscall:::return"),
    # fail_percent: the chance that newproc's lwp_create fails for a zone_create
    # (the newproc.lwp_create fault site, armed by the stress config unless the
    # boot faults name that site themselves)
    _stressor("zone", "coreadm on a forking victim; zone_create (newproc from a user "
              "thread), failing at times, and the wait for zsched",
              {"coreadms": (8, 0, 256), "zscheds": (1, 0, 1), "fail_percent": (20, 0, 100)},
              _zone,
              "syscall:::return", (_SYS["coreadm"], _SYS["zone_create"])),
)}

ORDER = tuple(STRESSORS)


def check_options(name: str, options: dict[str, int]) -> dict[str, int]:
    """The options of stressor ``name``, defaults filled in; BadInput names a bad one."""
    from ..safeio import shorten

    if name not in STRESSORS:
        raise BadInput(f"unknown stressor {shorten(repr(name))} (known: {', '.join(ORDER)})")
    st = STRESSORS[name]
    if not isinstance(options, dict):
        raise BadInput(f"options of stressor {name} must be a map, not {shorten(repr(options))}")
    out = dict(st.options)
    for k, v in options.items():
        if k not in st.options:
            known = ", ".join(st.options) or "none"
            raise BadInput(f"stressor {name} has no option {shorten(repr(k))} (options: {known})")
        low, high = st.ranges[k]
        flag = f"--{name}-{k.replace('_', '-')}"
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadInput(f"{flag} must be a whole number, not {shorten(repr(v))}")
        if not low <= v <= high:
            shown = f"{v}" if abs(v) < 10 ** 30 else f"an integer of {len(str(abs(v))):,} digits"
            raise BadInput(f"{flag} must be between {low:,} and {high:,}, not {shown}")
        out[k] = v
    if name == "forkall" and out["sleepers"] > out["lwps"]:
        raise BadInput("--forkall-sleepers must not exceed --forkall-lwps")
    return out


def option_help(name: str, opt: str) -> str:
    """The --help text of stressor option ``opt``: its default and range."""
    st = STRESSORS[name]
    low, high = st.ranges[opt]
    return f"(default {st.options[opt]}; {low:,}..{high:,})"


def instance_prefix(index: int) -> str:
    return f"s{index}_"


def compose(instances: list[tuple[str, dict[str, int]]], seed: int) -> str:
    """The init program that runs every ``(stressor, options)`` instance."""
    lines = ["; realfork stress: init starts one process per stressor instance", "main:"]
    for i, _ in enumerate(instances):
        P = instance_prefix(i)
        lines += [f"start{i}:", "    fork1", f"    beq rv, 0, {P}main",
                  f"    blt rv, 0, startfail{i}", f"    jmp started{i}",
                  f"startfail{i}:", "    sleep 1", f"    jmp start{i}", f"started{i}:"]
    lines += ["reap:", "    wait", "    bne rv, -1, reap", "    beq err, EINTR, reap",
              "    exit 0"]
    nth: dict[str, int] = {}
    for i, (name, opts) in enumerate(instances):
        # seeded by (stressor, k-th instance of it), not by position, so that
        # dropping another stressor (the minimizer) leaves this one's program alone
        k = nth[name] = nth.get(name, -1) + 1
        rng = random.Random(f"{seed}:{name}:{k}")
        lines.append(f"; instance {i}: {name}")
        lines += STRESSORS[name].build(instance_prefix(i), opts, rng)
    return "\n".join(lines) + "\n"
