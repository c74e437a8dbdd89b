"""The program generator: valid, deterministic, restricted, and terminating by construction.

Programs cannot run on the kernel yet, so the checks are structural (a static
walk of the code) and behavioural on the toy interpreter ``simulate``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realfork.errors import BadInput
from realfork.kernel.errno_defs import EAGAIN, ECHILD, EINTR
from realfork.kernel.signal_defs import SIGUSR1
from realfork.user import Program, format_program, parse
from realfork.user.generate import (
    FORKS,
    GENERATED_SYSCALLS,
    IMPLIED,
    STRUCTURAL_OPS,
    allowed_syscalls,
    generate,
    generate_text,
)
from realfork.user.isa import Disposition
from realfork.user.program import Imm, Instr, LabelRef, Reg
from realfork.user.simulate import SimResult, simulate

pytestmark = pytest.mark.timeout(60)

SEEDS = range(300)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

R3, R4, R7, RV, ERR = Reg("r3"), Reg("r4"), Reg("r7"), Reg("rv"), Reg("err")
BRANCHES = ("jmp", "beq", "bne", "blt")
WRITES_DEST = ("mov", "add", "sub", "load")


def ops(p: Program) -> set[str]:
    return {ins.op for ins in p.code}


def target(p: Program, ins: Instr) -> int:
    label = ins.args[-1]
    assert isinstance(label, LabelRef)
    return p.labels[label.name]


def is_instr(ins: Instr, op: str, *args: object) -> bool:
    return ins.op == op and ins.args[: len(args)] == args


# ------------------------------------------------------------ static checker


def static_problems(p: Program) -> list[str]:
    """Structural rules that make termination and the bounds hold (see generate's docstring)."""
    code, out = p.code, []
    n = len(code)

    def at(i: int) -> Instr | None:
        return code[i] if 0 <= i < n else None

    for i, ins in enumerate(code):
        where = f"{i} {ins.op}"
        if ins.op in FORKS:
            nxt = at(i + 1)
            if nxt is None or not is_instr(nxt, "beq", RV, Imm(0)):
                out.append(f"{where}: not followed by 'beq rv, 0, child'")
                continue
            child = target(p, nxt)
            if ins.op == "vfork":
                j = child
                while code[j].op in ("store", "mov", "add"):
                    j += 1
                if code[j].op not in ("exit", "exec"):
                    out.append(f"{where}: vfork child runs {code[j].op!r}")
        if ins.op in BRANCHES and target(p, ins) <= i:
            t = target(p, ins)
            reap = code[t].op == "wait" and not code[t].args and (
                (i == t + 1 and is_instr(ins, "bne", RV, Imm(-1)))
                or (i == t + 2 and is_instr(ins, "beq", ERR, Imm(EINTR)))
            )
            counter = (
                is_instr(ins, "bne", R7, Imm(0))
                and is_instr(code[i - 1], "sub", R7, Imm(1))
                and is_instr(code[t - 1], "mov", R7)
            )
            if counter:
                for j in range(t, i - 1):
                    body = code[j]
                    if body.op in WRITES_DEST and body.args[0] == R7:
                        counter = False
                        out.append(f"{where}: loop body writes r7 at {j}")
                    to_child = code[j - 1].op in FORKS  # checked below: that child exits
                    if body.op in BRANCHES and not t <= target(p, body) <= i and not to_child:
                        out.append(f"{where}: loop body jumps out at {j}")
                    if body.op in ("exec", "exit", "lwp_create", "lwp_exit"):
                        out.append(f"{where}: loop body runs {body.op} at {j}")
                    if body.op in FORKS:  # children of a fork loop exit at once
                        child = target(p, code[j + 1])
                        if code[child].op != "exit":
                            out.append(f"{where}: fork in a loop whose child does not exit")
                count = code[t - 1].args[1]
                if not (isinstance(count, Imm) and 1 <= count.value <= 4):
                    out.append(f"{where}: loop count {count}")
            if not (reap or counter):
                out.append(f"{where}: backward jump that is no counter or reap loop")
        if ins.op == "kill":
            pid, sig = ins.args
            if sig != Imm(SIGUSR1):
                out.append(f"{where}: signal {sig}")
            before = [at(i - 1), at(i - 2)]
            guarded = before[0] is not None and (
                is_instr(before[0], "blt", R3, Imm(1))
                or (is_instr(before[0], "blt", RV, Imm(0)) and before[1] == Instr("mov", (R3, RV)))
            )
            self_kill = before == [
                Instr("getpid"),
                Instr("sigaction", (Imm(SIGUSR1), Disposition.CATCH)),
            ]
            if not ((pid == R3 and guarded) or (pid == RV and self_kill)):
                out.append(f"{where}: unguarded kill of {pid}")
        if ins.op in ("lwp_suspend", "lwp_continue", "lwp_wait"):
            prev = at(i - 1)
            guard = ins.args[0]
            ok = prev is not None and prev.op == "blt" and prev.args[:2] == (guard, Imm(1))
            if ins.op == "lwp_continue":  # the end of a suspend/continue pair
                ok = ok or Instr("lwp_suspend", ins.args) in code[max(0, i - 3) : i]
            if not ok:
                out.append(f"{where}: id {guard} not checked >= 1")
        if ins.op == "lwp_suspend":
            window = list(code[i + 1 : i + 4])
            if Instr("lwp_continue", ins.args) not in window:
                out.append(f"{where}: not continued")
            else:
                between = window[: window.index(Instr("lwp_continue", ins.args))]
                if any(c.op in BRANCHES or c.op in FORKS or c.op == "wait" for c in between):
                    out.append(f"{where}: control flow before lwp_continue")
        if ins.op in ("load", "store"):
            addr = ins.args[1] if ins.op == "load" else ins.args[0]
            if not (isinstance(addr, Imm) and 0 <= addr.value < 64):
                out.append(f"{where}: address {addr}")
        limits = {"setuid": 3, "sleep": 20, "spin": 100}
        if ins.op in limits:
            v = ins.args[0]
            if not (isinstance(v, Imm) and 0 <= v.value <= limits[ins.op]):
                out.append(f"{where}: operand {v}")
        if ins.op == "sigaction" and ins.args[1] == Disposition.IGNORE:
            if ins.args[0] == Imm(18):
                out.append(f"{where}: SIGCHLD ignored")
    last = code[-1].op
    if last not in ("exit", "exec", "lwp_exit"):
        out.append(f"last instruction is {last}")
    return out


# ------------------------------------------------------------ validity and determinism


def test_hundreds_of_seeds_parse_and_round_trip() -> None:
    for seed in SEEDS:
        p = generate(seed)
        assert isinstance(p, Program)
        assert parse(format_program(p)) == p, seed
        assert parse(generate_text(seed)) == p, seed
        assert not ops(p) & {"prlock", "pragent", "prfork", "prstopfork", "prrun"}


def test_round_trip_with_options() -> None:
    for seed in range(60):
        options: list[dict[str, Any]] = [
            {"max_procs": 12, "max_lwps": 8, "length": 150},
            {"max_procs": 1, "max_lwps": 1, "length": 5},
            {"syscalls": ["vfork", "exec", "kill"], "init_may_exit_early": True},
        ]
        for opts in options:
            p = generate(seed, **opts)
            assert parse(format_program(p)) == p


def test_deterministic() -> None:
    for seed in (0, 1, 7, 12345, -3, 2**70):
        assert generate(seed) == generate(seed)
        assert generate_text(seed, length=80) == generate_text(seed, length=80)
        assert generate(seed, syscalls=["fork1", "sleep"]) == generate(
            seed, syscalls=("sleep", "fork1")
        )
    assert len({format_program(generate(seed)) for seed in range(50)}) == 50


def test_text_header_names_seed_and_options() -> None:
    text = generate_text(42, max_procs=3, max_lwps=2, length=25, syscalls=["fork1"])
    header = [line for line in text.splitlines() if line.startswith(";")][:3]
    assert "seed=42" in header[1]
    assert "max_procs=3 max_lwps=2 length=25 init_may_exit_early=False" in header[1]
    assert header[2].startswith("; syscalls=fork1 (allowed: exit,fork1,wait)")
    assert "syscalls=all" in generate_text(1)
    assert text.splitlines()[3] == "main:"


def test_every_system_call_appears_across_seeds() -> None:
    seen: Counter[str] = Counter()
    for seed in SEEDS:
        seen.update(ops(generate(seed)))
    missing = GENERATED_SYSCALLS - set(seen)
    assert not missing, f"never generated: {sorted(missing)}"
    assert set(seen) <= GENERATED_SYSCALLS | STRUCTURAL_OPS


def test_length_is_roughly_the_program_size() -> None:
    for length in (0, 40, 200):
        sizes = [len(generate(seed, length=length).code) for seed in range(40)]
        mean = sum(sizes) / len(sizes)
        assert length <= mean <= length + 40, (length, mean)
    assert min(len(generate(seed, length=0).code) for seed in range(20)) == 1  # 'exit 0'


# ------------------------------------------------------------ syscalls=


@pytest.mark.parametrize(
    ("given", "allowed"),
    [
        ([], {"exit"}),
        (["getpid", "sleep"], {"getpid", "sleep", "exit"}),
        (["fork1"], {"fork1", "wait", "exit"}),
        (["vfork", "exec"], {"vfork", "exec", "wait", "exit"}),
        (["lwp_create"], {"lwp_create", "lwp_exit", "exit"}),
        (["lwp_suspend"], {"lwp_suspend", "lwp_continue", "lwp_create", "lwp_exit", "exit"}),
        (["kill"], {"kill", "sigaction", "getpid", "exit"}),
        (["setuid"], {"setuid", "fork1", "wait", "exit"}),
        (["setuid", "forkall"], {"setuid", "forkall", "wait", "exit"}),
        (["mov", "jmp", "nop"], {"nop", "exit"}),
    ],
)
def test_allowed_syscalls_closure(given: list[str], allowed: set[str]) -> None:
    assert allowed_syscalls(given) == allowed
    for seed in range(40):
        used = ops(generate(seed, syscalls=given)) - STRUCTURAL_OPS
        assert used <= allowed, (seed, used - allowed)


def test_allowed_syscalls_defaults_and_implications() -> None:
    assert allowed_syscalls(None) == GENERATED_SYSCALLS
    for name, needs in IMPLIED.items():
        assert set(needs) <= allowed_syscalls([name])
    assert allowed_syscalls(GENERATED_SYSCALLS) == GENERATED_SYSCALLS


@given(
    seed=st.integers(0, 10**6),
    names=st.sets(st.sampled_from(sorted(GENERATED_SYSCALLS | STRUCTURAL_OPS))),
)
@FAST
def test_syscalls_restriction_is_honoured(seed: int, names: set[str]) -> None:
    p = generate(seed, syscalls=names)
    assert ops(p) <= allowed_syscalls(names) | STRUCTURAL_OPS
    assert static_problems(p) == []


def test_restricted_programs_still_use_what_was_asked() -> None:
    for name in sorted(GENERATED_SYSCALLS):
        found = any(name in ops(generate(seed, syscalls=[name])) for seed in range(60))
        assert found, name


@pytest.mark.parametrize(
    "bad", [["bogus"], ["fork1", "FORK1"], ["prlock"], ["pragent"], [None], [3], "fork1", 5]
)
def test_unknown_syscalls_rejected(bad: object) -> None:
    with pytest.raises(BadInput):
        generate(0, syscalls=bad)  # type: ignore[arg-type]
    with pytest.raises(BadInput):
        allowed_syscalls(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "opts",
    [
        {"max_procs": 0},
        {"max_lwps": 0},
        {"length": -1},
        {"length": 10**6},
        {"max_procs": True},
        {"max_lwps": 2.0},
        {"init_may_exit_early": 1},
    ],
)
def test_bad_options_rejected(opts: dict[str, Any]) -> None:
    with pytest.raises(BadInput):
        generate(0, **opts)


def test_bad_seed_rejected() -> None:
    with pytest.raises(BadInput):
        generate("1")  # type: ignore[arg-type]
    with pytest.raises(BadInput):
        generate(1.5)  # type: ignore[arg-type]


# ------------------------------------------------------------ structure


def test_static_structure_over_hundreds_of_seeds() -> None:
    for seed in SEEDS:
        options: list[dict[str, Any]] = [{}, {"max_procs": 10, "max_lwps": 6, "length": 120}]
        for opts in options:
            p = generate(seed, **opts)
            assert static_problems(p) == [], (seed, opts, generate_text(seed, **opts))


def test_static_checker_catches_bad_shapes() -> None:
    bad = {
        "main: nop\n jmp main\n": "backward jump",
        "main: fork1\n exit 0\n": "not followed",
        "main: vfork\n beq rv, 0, c\n exit 0\nc: getpid\n exit 0\n": "vfork child runs",
        "main: kill r3, SIGUSR1\n exit 0\n": "unguarded kill",
        "main: mov r7, 2\nl: mov r7, 2\n sub r7, 1\n bne r7, 0, l\n exit 0\n": "writes r7",
        "main: blt r4, 1, s\n lwp_suspend r4\ns: exit 0\n": "not continued",
        "main: store 64, 1\n exit 0\n": "address",
        "main: mov r7, 2\nl: fork1\n beq rv, 0, c\n sub r7, 1\n bne r7, 0, l\n exit 0\n"
        "c: nop\n exit 0\n": "does not exit",
    }
    for text, why in bad.items():
        problems = static_problems(parse(text))
        assert any(why in msg for msg in problems), (text, problems)


# ------------------------------------------------------------ behaviour on the toy model


def problems_over(
    seeds: range, sched: int = 2, maxprocs: int | None = None, maxlwps: int | None = None,
    **opts: Any,
) -> tuple[list[str], list[SimResult]]:
    max_procs = int(opts.get("max_procs", 6))
    max_lwps = int(opts.get("max_lwps", 4))
    early = bool(opts.get("init_may_exit_early", False))
    found, results = [], []
    for seed in seeds:
        p = generate(seed, **opts)
        for s in range(sched):
            r = simulate(p, s, maxprocs=maxprocs, maxlwps=maxlwps)
            results.append(r)
            found += [f"seed {seed} sched {s}: {m}" for m in r.problems(max_procs, max_lwps, early)]
    return found, results


def test_simulated_programs_terminate_within_bounds() -> None:
    found, results = problems_over(SEEDS)
    assert found == []
    assert all(r.init_status == 0 for r in results)
    assert max(r.procs for r in results) == 6
    assert max(r.max_lwps for r in results) == 4
    assert sum(r.interrupted for r in results) > 0  # EINTR paths are exercised
    executed: Counter[str] = sum((r.executed for r in results), Counter())
    assert GENERATED_SYSCALLS <= set(executed)


def test_simulated_with_fork_and_lwp_failures() -> None:
    found, results = problems_over(range(200), maxprocs=2, maxlwps=2)
    assert found == []
    assert sum(r.fork_failures for r in results) > 50
    assert sum(r.lwp_create_failures for r in results) > 50
    found, results = problems_over(range(100), maxprocs=1)
    assert found == [] and all(r.procs == 1 for r in results)


@pytest.mark.parametrize(
    "opts",
    [
        {"max_procs": 1},
        {"max_procs": 2, "max_lwps": 1},
        {"max_procs": 12, "max_lwps": 8, "length": 200},
        {"max_lwps": 2, "length": 100},
        {"syscalls": ["forkall", "lwp_create", "lwp_suspend", "lwp_wait"]},
        {"syscalls": ["vfork", "exec", "kill", "setuid"]},
    ],
)
def test_options_bound_the_tree(opts: dict[str, Any]) -> None:
    found, results = problems_over(range(120), **opts)
    assert found == []
    assert max(r.procs for r in results) <= int(opts.get("max_procs", 6))


def test_init_may_exit_early() -> None:
    found, results = problems_over(range(200), init_may_exit_early=True, max_procs=8)
    assert found == []
    early = [r for r in results if any(pid == 1 for pid, _ in r.early_exits)]
    assert early, "init never exited before its children"
    strict = [r.problems(8, 4) for r in early]
    assert all(any("pid 1 exited" in m for m in msgs) for msgs in strict)
    _, results = problems_over(range(200), max_procs=8)
    assert not any(r.early_exits for r in results)


@given(
    seed=st.integers(0, 10**9),
    sched=st.integers(0, 1000),
    max_procs=st.integers(1, 10),
    max_lwps=st.integers(1, 6),
    length=st.integers(0, 120),
    early=st.booleans(),
    limit=st.one_of(st.none(), st.integers(1, 4)),
    names=st.one_of(st.none(), st.sets(st.sampled_from(sorted(GENERATED_SYSCALLS)))),
)
@FAST
def test_property_any_options_terminate_within_bounds(
    seed: int, sched: int, max_procs: int, max_lwps: int, length: int, early: bool,
    limit: int | None, names: set[str] | None,
) -> None:
    p = generate(seed, max_procs=max_procs, max_lwps=max_lwps, length=length,
                 syscalls=names, init_may_exit_early=early)
    assert static_problems(p) == []
    r = simulate(p, sched, maxprocs=limit, maxlwps=limit)
    assert r.problems(max_procs, max_lwps, early) == []


# ------------------------------------------------------------ the toy model itself


def run(text: str, **kw: int) -> SimResult:
    return simulate(parse(text), **kw)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("main: fork1\n beq rv, 0, c\n wait\n exit rv\nc: exit 0\n", 2),  # parent rv = pid
        ("main: fork1\n beq rv, 0, c\n wait\n exit st\nc: exit 7\n", 7),  # wait st = status
        ("main: wait\n exit err\n", ECHILD),
        ("main: wait\n exit rv\n", 255),  # -1
        ("main: fork1\n bne rv, 0, p\n exit 3\np: wait rv\n exit st\n", 3),
        ("main: mov r0, 5\n exec t\nt: exit r0\n", 0),  # exec clears registers
        ("main: store 3, 4\n exec t\nt: load r0, 3\n exit r0\n", 0),  # and memory
        ("main: lwp_create b\n mov r0, rv\n lwp_wait r0\n exit r0\nb: lwp_exit\n", 2),
        ("main: vfork\n beq rv, 0, c\n wait\n load r0, 3\n exit r0\nc: store 3, 9\n exit 0\n", 9),
        ("main: fork1\n beq rv, 0, c\n wait\n load r0, 3\n exit r0\nc: store 3, 9\n exit 0\n", 0),
        ("main: forkall\n beq rv, 0, c\n wait\n exit st\nc: getppid\n exit rv\n", 1),
        ("main: fork1\n beq rv, 0, c\n wait\n exit st\nc: getpid\n kill rv, SIGKILL\n exit 0\n",
         128 + 9),
    ],
)
def test_toy_model_follows_the_language_contract(text: str, status: int) -> None:
    r = run(text)
    assert r.terminated
    assert r.init_status == status


def test_toy_model_fork_failure_is_eagain() -> None:
    r = run("main: fork1\n beq rv, 0, c\n blt rv, 0, f\n wait\n exit 1\nf: exit err\n"
            "c: exit 0\n", maxprocs=1)
    assert (r.init_status, r.fork_failures, r.procs) == (EAGAIN, 1, 1)
    r = run("main: lwp_create b\n exit err\nb: lwp_exit\n", maxlwps=1)
    assert (r.init_status, r.lwp_create_failures) == (EAGAIN, 1)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("main: nop\n jmp main\n", "did not terminate"),
        ("main: fork1\n beq rv, 0, c\n exit 0\nc: sleep 5\n exit 0\n", "pid 1 exited with 1"),
        ("main: vfork\n beq rv, 0, c\n wait\n exit 0\nc: getpid\n exit 0\n", "vfork child runs"),
        ("main: fork1\n fork1\n wait\n wait\n wait\n wait\n exit 0\n", "4 processes"),
        ("main: lwp_create b\n lwp_create b\n exit 0\nb: sleep 1\n lwp_exit\n", "3 lwps"),
        ("main: lwp_create b\n mov r0, rv\n lwp_suspend r0\n lwp_wait r0\n exit 0\n"
         "b: mov r7, 100\nl: sub r7, 1\n bne r7, 0, l\n lwp_exit\n", "deadlock"),
        ("main: getpid\n kill rv, SIGUSR1\n exit 0\n", "killed by signal 16"),
        ("main: setuid 1\n exit 0\n", "init calls setuid"),
        ("main: nop\n", "ran off the end"),
        ("main: kill -1, SIGUSR1\n exit 0\n", "process group"),
    ],
)
def test_toy_model_reports_broken_programs(text: str, why: str) -> None:
    problems = run(text, max_steps=500).problems(max_procs=3, max_lwps=2)
    assert any(why in m for m in problems), problems


def test_toy_model_signals_follow_dispositions() -> None:
    catch = ("main: sigaction SIGUSR1, catch\n getpid\n kill rv, SIGUSR1\n exit 0\n")
    assert run(catch).problems(1, 1) == []
    # vfork and exec reset caught signals: the child dies of SIGUSR1; ignored ones stay
    vfork_resets = ("main: sigaction SIGUSR1, catch\n vfork\n beq rv, 0, c\n"
                    " kill rv, SIGUSR1\n wait\n exit st\nc: exec t\n"
                    "t: mov r7, 50\nl: sleep 1\n sub r7, 1\n bne r7, 0, l\n exit 0\n")
    r = run(vfork_resets)
    assert (r.signaled, r.init_status) == ([(2, SIGUSR1)], 128 + SIGUSR1)
    r = run(vfork_resets.replace("catch", "ignore"))
    assert (r.signaled, r.init_status) == ([], 0)
    fork_keeps = vfork_resets.replace("vfork", "fork1").replace("exec t", "jmp t")
    r = run(fork_keeps)
    assert (r.signaled, r.init_status) == ([], 0)
