"""The pytest plugin, in real pytest sessions (pytester)."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(300)

HANG = '''
    getpid
    prstopfork rv, 1        ; init stops itself after its fork; nothing restarts it
    fork1
    beq rv, 0, child
    exit 0
child:
    exit 0
'''


def orphaned_segments() -> list[str]:
    """Segments whose creating process is gone: what a session left behind."""
    from realfork.errors import BadInput
    from realfork.shm.segment import Segment, creator_alive, list_segments

    out = []
    for name, _st in list_segments(os.geteuid()):
        try:
            seg = Segment.attach(name)
        except BadInput:
            continue
        try:
            if not creator_alive(seg):
                out.append(name)
        finally:
            seg.unmap()
    return out


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert orphaned_segments() == [], "the session left shared memory behind"
    return result


def test_kernel_fixture_marker_and_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        import pytest

        def test_default(kernel):
            r = kernel.run("fork1\\n beq rv, 0, c\\n wait\\n exit st\\n c: exit 3")
            assert r.status == 3 and kernel.params.backend == "threads"

        @pytest.mark.realfork(backend="processes", seed=7, nproc=40)
        def test_marked(kernel):
            assert kernel.params.backend == "processes"
            assert kernel.params.seed == 7 and kernel.params.nproc == 40
            assert kernel.run("exit 0").status == 0
    ''')
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result = run(pytester, "--realfork-seed", "11", "-k", "default")
    result.assert_outcomes(passed=1)


def test_failure_says_how_to_reproduce(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
        import pytest, realfork

        @pytest.mark.realfork(backend="processes", seed=5)
        def test_generated(kernel):
            r = kernel.run(realfork.generate(kernel.params.seed))
            assert r.status == 1, f"status {r.status}"   # fails: generated programs exit 0
    ''')
    result = run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "realfork" in out and "backend=processes seed=5" in out
    line = next(x for x in out.splitlines() if x.startswith("reproduce: realfork run"))
    cmd = line.removeprefix("reproduce: ").split()
    # the saved program replays: same backend, same seed, same result
    env = dict(os.environ)
    replay = subprocess.run([sys.executable, "-m", "realfork", *cmd[1:]], capture_output=True,
                            text=True, env=env, timeout=120)
    assert replay.returncode == 0, replay.stderr
    assert "init exited with status 0" in replay.stdout


def test_kernel_deadline_fires_before_pytest_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f'''
        import pytest

        @pytest.mark.timeout(30)
        def test_hang(kernel):
            r = kernel.run({HANG!r})
            assert r.report is None

        def test_next():
            pass
    ''')
    result = run(pytester)
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    assert "realfork HANG" in out  # the kernel's own report (deadline = timeout / 3)
    assert "Timeout" not in out


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_pytest_timeout_signal_method_reports_and_goes_on(pytester: pytest.Pytester,
                                                          backend: str) -> None:
    pytester.makepyfile(f'''
        import pytest

        @pytest.mark.timeout(6)
        @pytest.mark.realfork(backend={backend!r}, deadlock_timeout=600)
        def test_hang(kernel):
            r = kernel.run({HANG!r})
            assert r.report is None

        def test_next():
            pass
    ''')
    kids = descendants()
    result = run(pytester, "--timeout-method=signal")
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    assert "pytest-timeout (6 s) is about to fire" in out
    assert "pid 1 lwp 1" in out  # the wait-for report names init's lwp
    assert descendants() <= kids


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_pytest_timeout_thread_method_reports_and_releases(pytester: pytest.Pytester,
                                                           backend: str) -> None:
    pytester.makepyfile(f'''
        import threading, time, pytest

        @pytest.mark.timeout(6)
        @pytest.mark.realfork(backend={backend!r}, deadlock_timeout=600)
        def test_hang(kernel):
            threading.Thread(target=kernel.run, args=({HANG!r},), daemon=True).start()
            time.sleep(60)   # the test itself hangs, outside the kernel
    ''')
    kids = descendants()
    result = run(pytester, "--timeout-method=thread")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    assert "realfork wait-for report" in out
    assert "pytest-timeout (6 s) is about to fire" in out
    assert descendants() <= kids


VFORK_LOOP = '''
main:
    mov r1, 0
loop:
    vfork
    beq rv, 0, child
    wait rv
    add r1, 1
    blt r1, 5000, loop
    exit 0
child:
    exit 3
'''


def test_processes_abba_deadlock_names_the_cycle_and_the_session_goes_on(
        pytester: pytest.Pytester) -> None:
    # relvm_parent_first: the vfork child takes its parent's p_lock before its
    # own, while the parent's vfwait holds the child's and wants its own.
    # Schedule noise widens the window so the ABBA happens within seconds.
    pytester.makepyfile(f'''
        import pytest

        @pytest.mark.timeout(120)
        @pytest.mark.realfork(backend="processes", bugs=["relvm_parent_first"],
                              deadlock_timeout=1.0, seed=1,
                              noise={{"mode": "contest", "prob": 0.5, "sleep_us": 1000,
                                      "seed": 1}})
        def test_abba(kernel):
            r = kernel.run({VFORK_LOOP!r}, timeout=100)
            assert r.report is None, str(r.report)

        def test_next(kernel):
            assert kernel.run("exit 5").status == 5
    ''')
    kids = descendants()
    result = run(pytester)
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    assert "realfork DEADLOCK" in out
    # the cycle: the parent in vfwait and its child in relvm, each holding
    # the p_lock the other wants
    cycle = [ln for ln in out.splitlines() if "cycle: " in ln]
    assert cycle, out
    assert "(vfwait) holds p_lock[pid " in cycle[0] and "(relvm), which waits for p_lock" \
        in cycle[0]
    repro = next(ln for ln in out.splitlines() if ln.startswith("reproduce: realfork run"))
    for opt in ("--backend processes", "--seed 1", "--deadlock-timeout 1",
                "--bug relvm_parent_first", "--noise contest --noise-prob 0.5"):
        assert opt in repro, repro
    assert descendants() <= kids


def test_lost_wakeup_is_reported_as_a_hang(pytester: pytest.Pytester) -> None:
    # relvm_lost_wakeup: the vfork child gives the address space back without
    # waking its parent, then runs on in a new image, so the parent's p_cv
    # wait has no lock cycle; it is still a hang.
    program = '''
        vfork
        beq rv, 0, child
        wait rv
        exit 0
    child:
        exec image
    image:
        sleep 60000
        exit 0
    '''
    pytester.makepyfile(f'''
        import pytest

        @pytest.mark.timeout(120)
        @pytest.mark.realfork(bugs=["relvm_lost_wakeup"], deadlock_timeout=1.0)
        def test_lost(kernel):
            r = kernel.run({program!r}, timeout=100)
            assert r.report is None, str(r.report)
    ''')
    result = run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "realfork HANG: pid 1 lwp 1 sleeps on p_cv[pid 1] (condvar) and nobody will " \
           "signal it: its vfork child pid" in out
    assert "gave the address space back without waking it" in out
