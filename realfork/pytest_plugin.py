"""realfork's pytest plugin (registered through the ``pytest11`` entry point).

* the ``kernel`` fixture: a booted kernel (``realfork.boot``), checked with the
  invariant checker and shut down with a leak check at teardown;
* the ``realfork`` marker sets boot parameters per test:
  ``@pytest.mark.realfork(backend="processes", seed=7, nproc=64, faults={...})``;
* options ``--realfork-backend`` and ``--realfork-seed`` run a whole suite on
  one backend or seed; ``--realfork-deadlock-timeout`` sets the kernel deadline;
* on failure, a ``realfork`` report section says how to reproduce: backend,
  seed, and the last program the kernel ran, saved as msgpack;
* with pytest-timeout: shortly before its timer fires, the kernel of the test
  is panicked on purpose, so the wait-for report lands in the output and every
  kernel thread, host and segment is released, whichever timeout method is
  used (the ``thread`` method then exits the process, the ``signal`` method
  fails the test and the session goes on).  The kernel's own deadline is set
  below pytest-timeout's, so a deadlock is reported by the kernel first.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import realfork

_SYSTEMS = pytest.StashKey[list]()
_WATCHDOG = pytest.StashKey[threading.Timer]()
_TIMEOUT = pytest.StashKey[float]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("realfork")
    group.addoption("--realfork-backend", choices=("threads", "processes"), default=None,
                    help="boot every realfork kernel on this backend")
    group.addoption("--realfork-seed", type=int, default=None,
                    help="boot every realfork kernel with this seed")
    group.addoption("--realfork-deadlock-timeout", type=float, default=None,
                    help="the kernels' deadlock deadline, seconds")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realfork(**params): boot parameters for the test's realfork kernel "
        "(backend, nproc, maxlwps, maxpid, maxup, ncpus, deadlock_timeout, seed, faults)")


def boot_params(item: pytest.Item) -> dict[str, Any]:
    """Defaults < command line < the test's marker."""
    cfg = item.config
    params: dict[str, Any] = {}
    if cfg.getoption("--realfork-backend"):
        params["backend"] = cfg.getoption("--realfork-backend")
    if cfg.getoption("--realfork-seed") is not None:
        params["seed"] = cfg.getoption("--realfork-seed")
    if cfg.getoption("--realfork-deadlock-timeout") is not None:
        params["deadlock_timeout"] = cfg.getoption("--realfork-deadlock-timeout")
    for mark in reversed(list(item.iter_markers("realfork"))):
        params.update(mark.kwargs)
    timeout = item.stash.get(_TIMEOUT, None)
    if timeout and "deadlock_timeout" not in params:
        params["deadlock_timeout"] = max(0.5, min(10.0, timeout / 3))
    return params


@pytest.fixture
def kernel(request: pytest.FixtureRequest) -> Iterator[realfork.System]:
    """A booted realfork kernel; checked and shut down (leak-checked) afterwards."""
    item = request.node
    system = realfork.boot(**boot_params(item))
    item.stash.setdefault(_SYSTEMS, []).append(system)
    try:
        yield system
        if not system.dom.panicked:
            system.check()
    finally:
        name = system.name
        system.close()
        left = [n for n in os.listdir("/dev/shm") if name in n]
        assert not left, f"realfork kernel {name} left {left} behind"


# -- reproducing a failure -----------------------------------------------------------


def _repro(system: realfork.System, nodeid: str) -> str:
    p = system.params
    lines = [f"kernel {system.name}: backend={p.backend} seed={p.seed} "
             f"nproc={p.nproc} deadlock_timeout={p.deadlock_timeout}"]
    data = getattr(system, "last_program", None)
    if data:
        d = os.path.join(tempfile.gettempdir(), "realfork-repro")
        os.makedirs(d, exist_ok=True)
        safe = "".join(c if c.isalnum() else "_" for c in nodeid)[-120:]
        path = os.path.join(d, safe + ".rfm")
        with open(path, "wb") as f:
            f.write(data)
        from .cli import boot_options

        opts = boot_options(p)
        lines.append(f"reproduce: realfork run {opts} {path}")
    rep = system.panic_report()
    if rep is not None:
        lines.append(str(rep))
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    systems = item.stash.get(_SYSTEMS, [])
    if rep.failed and systems:
        text = "\n".join(_repro(s, item.nodeid) for s in systems)
        rep.sections.append(("realfork", text))


# -- pytest-timeout --------------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """pytest-timeout is arming its timer: arm ours to fire just before."""
    timeout = float(getattr(settings, "timeout", 0) or 0)
    if timeout <= 0:
        return
    item.stash[_TIMEOUT] = timeout
    lead = min(2.0, timeout * 0.2)
    timer = threading.Timer(timeout - lead, _before_timeout, args=(item, timeout, settings))
    timer.daemon = True
    timer.name = "watchdog-for-realfork"
    item.stash[_WATCHDOG] = timer
    timer.start()
    return None  # pytest-timeout still sets its own timer


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    timer = item.stash.get(_WATCHDOG, None)
    if timer is not None:
        timer.cancel()
    return None


def _before_timeout(item: pytest.Item, timeout: float, settings: Any) -> None:
    """Panic the test's kernels (their report is the output) and release them."""
    systems = item.stash.get(_SYSTEMS, [])
    texts = []
    for system in systems:
        rep = system.panic(f"pytest-timeout ({timeout:g} s) is about to fire in "
                           f"{item.nodeid}", kind="hang")
        if rep is not None:
            texts.append(str(rep))
    if not texts:
        return
    text = "\n".join(texts)
    item.add_report_section("call", "realfork", text)
    method = getattr(settings, "method", "signal")
    if method == "thread":  # the process is about to exit: print now, release now
        capman = item.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            capman.suspend_global_capture(in_=True)
        tw = item.config.get_terminal_writer()
        tw.sep("+", title="realfork wait-for report")
        tw.write(text + "\n")
        tw.flush()
        for system in systems:
            system.close()
