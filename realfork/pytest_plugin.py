"""realfork's pytest plugin (registered through the ``pytest11`` entry point).

* the ``kernel`` fixture: a booted kernel (``realfork.boot``), checked with the
  invariant checker and shut down with a leak check at teardown;
* the ``realfork`` marker sets boot parameters per test:
  ``@pytest.mark.realfork(backend="processes", seed=7, nproc=64, faults={...})``;
* options ``--realfork-backend``, ``--realfork-seed`` and ``--realfork-kernel``
  run a whole suite on one backend, seed or kernel profile (``2006`` or
  ``fixed``); ``--realfork-deadlock-timeout`` sets the kernel deadline;
* on failure, a ``realfork`` report section says how to reproduce: backend,
  seed, and the last program the kernel ran, saved as msgpack in a directory
  only the tester can write (``realfork-repro`` under pytest's own base
  temporary directory), each file created anew (never written through a name
  someone else put there) under a name no other reproducer has;
* with pytest-timeout: shortly before its timer fires, the kernel of the test
  is panicked on purpose, so the wait-for report lands in the output and every
  kernel thread, host and segment is released, whichever timeout method is
  used (the ``thread`` method then exits the process, the ``signal`` method
  fails the test and the session goes on).  The kernel's own deadline is set
  below pytest-timeout's, so a deadlock is reported by the kernel first.

Nothing here reads a kernel's segment directly: only ``realfork.System``'s
methods do, and they never read one that is closed or closing (a watchdog
thread may close a kernel while the test's own thread still uses it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import realfork
from realfork import safeio
from realfork.errors import BadInput

if TYPE_CHECKING:
    from pluggy import Result

_SYSTEMS = pytest.StashKey[list]()
_WATCHDOG = pytest.StashKey[threading.Timer]()
_TIMEOUT = pytest.StashKey[float]()
_TMP = pytest.StashKey[pytest.TempPathFactory]()
_REPRO_DIR = "realfork-repro"
_NAME_TRIES = 1000


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("realfork")
    group.addoption("--realfork-backend", choices=("threads", "processes"), default=None,
                    help="boot every realfork kernel on this backend")
    group.addoption("--realfork-seed", type=int, default=None,
                    help="boot every realfork kernel with this seed")
    group.addoption("--realfork-kernel", choices=("2006", "fixed"), default=None,
                    help="boot every realfork kernel with this profile (default fixed)")
    group.addoption("--realfork-deadlock-timeout", type=float, default=None,
                    help="the kernels' deadlock deadline, seconds")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "realfork(**params): boot parameters for the test's realfork kernel "
        "(backend, kernel, nproc, maxlwps, maxpid, maxup, ncpus, deadlock_timeout, seed, faults, "
        "bugs, ...)")


def boot_params(item: pytest.Item) -> dict[str, Any]:
    """Defaults < command line < the test's marker."""
    cfg = item.config
    params: dict[str, Any] = {}
    if cfg.getoption("--realfork-backend"):
        params["backend"] = cfg.getoption("--realfork-backend")
    if cfg.getoption("--realfork-seed") is not None:
        params["seed"] = cfg.getoption("--realfork-seed")
    if cfg.getoption("--realfork-kernel"):
        params["kernel"] = cfg.getoption("--realfork-kernel")
    if cfg.getoption("--realfork-deadlock-timeout") is not None:
        params["deadlock_timeout"] = cfg.getoption("--realfork-deadlock-timeout")
    for mark in reversed(list(item.iter_markers("realfork"))):
        params.update(mark.kwargs)
    timeout = item.stash.get(_TIMEOUT, None)
    if timeout and "deadlock_timeout" not in params:
        params["deadlock_timeout"] = max(0.5, min(10.0, timeout / 3))
    return params


@pytest.fixture
def kernel(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[realfork.System]:
    """A booted realfork kernel; checked and shut down (leak-checked) afterwards."""
    item = request.node
    item.stash[_TMP] = tmp_path_factory
    system = realfork.boot(**boot_params(item))
    item.stash.setdefault(_SYSTEMS, []).append(system)
    try:
        yield system
        # A watchdog may have closed the kernel (pytest-timeout's thread
        # method): then there is nothing left to check.
        if not system.closed and not system.panicked:
            try:
                system.check()
            except BadInput:
                if not system.closed:  # closed meanwhile: the same case
                    raise
    finally:
        name = system.name
        system.close()
        left = [n for n in os.listdir("/dev/shm") if name in n]
        assert not left, f"realfork kernel {name} left {left} behind"


# -- reproducing a failure -----------------------------------------------------------


def _repro_dir(item: pytest.Item) -> str:
    """The session's private directory for reproducers: under pytest's own
    base temporary directory (created 0700 for this user, one per session and
    per xdist worker), and checked to be a real directory of this user that
    nobody else can write."""
    base = item.stash[_TMP].getbasetemp()  # the kernel fixture put it there
    return safeio.private_dir(Path(base) / _REPRO_DIR, "reproducer directory")


def save_reproducer(item: pytest.Item, data: bytes) -> str:
    """Write ``data`` to a new file in the session's reproducer directory;
    its path.  The name comes from the test id; one already taken (another
    test whose id reads the same once made a file name, or a second failure
    of the same test) gets a numbered suffix.  Never written through a name
    that exists: the file is created with O_EXCL|O_NOFOLLOW."""
    d = _repro_dir(item)
    safe = "".join(c if c.isalnum() else "_" for c in item.nodeid)[-120:]
    for n in range(_NAME_TRIES):
        path = os.path.join(d, f"{safe}.rfm" if n == 0 else f"{safe}-{n}.rfm")
        if os.path.lexists(path):
            continue
        try:
            safeio.create_new(path, data)
        except BadInput:
            if os.path.lexists(path):  # taken between the look and the create
                continue
            raise
        return path
    raise BadInput(f"no free reproducer name for {safe} in {d}")


def _repro(system: realfork.System, item: pytest.Item) -> str:
    p = system.params
    lines = [f"kernel {system.name}: backend={p.backend} seed={p.seed} "
             f"nproc={p.nproc} deadlock_timeout={p.deadlock_timeout}"]
    data = system.last_program
    if data:
        try:
            path = save_reproducer(item, data)
        except BadInput as e:
            lines.append(f"reproducer not saved: {e}")
        else:
            from .cmdline import boot_options

            lines.append(f"reproduce: realfork run {boot_options(p)} {path}")
    rep = system.panic_report()
    if rep is not None:
        lines.append(str(rep))
    return "\n".join(lines)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
        item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, Result[pytest.TestReport], None]:
    outcome = yield  # a hookwrapper is sent the outcome of the hooks it wraps
    rep = outcome.get_result()
    systems = item.stash.get(_SYSTEMS, [])
    if rep.failed and systems:
        text = "\n".join(_repro(s, item) for s in systems)
        rep.sections.append(("realfork", text))


# -- pytest-timeout --------------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """pytest-timeout is arming its timer: arm ours to fire just before."""
    timeout = float(getattr(settings, "timeout", 0) or 0)
    if timeout <= 0:
        return
    item.stash[_TIMEOUT] = timeout
    lead = _lead(timeout)
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
    """Panic the test's kernels (their report is the output) and release them.

    With the ``thread`` method pytest-timeout ends the process (``os._exit``)
    when its own timer fires: the report is printed now, and each kernel is
    closed at once, names in /dev/shm first; a call of the test's thread still
    inside the kernel makes the close leave the unmapping to it (it never
    reads a segment unmapped under it)."""
    systems = item.stash.get(_SYSTEMS, [])
    texts = []
    for system in systems:
        rep = system.panic(f"pytest-timeout ({timeout:g} s) is about to fire in "
                           f"{item.nodeid}", kind="hang")
        if rep is not None:
            texts.append(str(rep))
    if not texts:
        return
    item.add_report_section("call", "realfork", "\n".join(texts))
    if getattr(settings, "method", "signal") != "thread":
        return
    # the process is about to exit: no report section will be shown, print now
    text = "\n".join(_repro(system, item) for system in systems)
    capman = item.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.suspend_global_capture(in_=True)
    tw = item.config.get_terminal_writer()
    tw.sep("+", title="realfork wait-for report")
    tw.write(text + "\n")
    tw.flush()
    for system in systems:
        system.close(wait=_lead(timeout) / 2)


def _lead(timeout: float) -> float:
    """How long before pytest-timeout's timer ours fires."""
    return min(2.0, timeout * 0.2)
