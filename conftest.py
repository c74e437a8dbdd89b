"""The test suite's shared fixtures: booting a bare substrate, and a leak check
around every test.

It sits at the top of the repository, beside pyproject.toml (whose
``[tool.pytest.ini_options]`` makes this directory pytest's rootdir and puts
tests/ on sys.path), so it is loaded whether pytest runs from here (``python -m
pytest``) or from inside tests/.  Tests import its ``leftovers`` as ``from
conftest import leftovers`` and their helpers as ``from helpers import ...``
(tests/helpers.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from helpers import words_layout

from realfork.shm.turnstile import chain_file_segment
from realfork.sync.domain import CREATED_HERE, Substrate


def leftovers(names: list[str]) -> list[str]:
    """Files in /dev/shm belonging to the given segments: the segment itself and
    its chain locks (``sem.<segment>-tc-<hash>``), whoever booted them."""
    wanted = set(names)
    return sorted(n for n in os.listdir("/dev/shm")
                  if n in wanted or chain_file_segment(n) in wanted)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test must release every segment, semaphore and thread it made.

    Only this process's own segments are checked, so concurrent test runs on
    the same machine do not blame each other.
    """
    first = len(CREATED_HERE)
    threads_before = {t.ident for t in threading.enumerate()}
    yield
    left = leftovers(CREATED_HERE[first:])
    assert not left, f"test left shared-memory objects behind: {left}"
    stray = [t.name for t in threading.enumerate()
             if t.ident not in threads_before and t.name.startswith("realfork")]
    assert not stray, f"test left kernel threads running: {stray}"


@pytest.fixture
def dom() -> Iterator[Substrate]:
    d = Substrate.boot(maxlwps=64, nsync=256, deadlock_timeout=2.0,
                       extra_layout=words_layout)
    try:
        yield d
    finally:
        d.shutdown()


@pytest.fixture(params=["threads", "processes"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a kernel test on both backends (``boot_checked`` picks it up)."""
    import helpers

    helpers.DEFAULT_BACKEND = request.param
    try:
        yield request.param
    finally:
        helpers.DEFAULT_BACKEND = "threads"
