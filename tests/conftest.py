"""Shared fixtures: booting a bare substrate, and a leak check around every test."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from helpers import words_layout

from realfork.shm.turnstile import chain_files
from realfork.sync.domain import CREATED_HERE, Substrate


def leftovers(names: list[str]) -> list[str]:
    """Files in /dev/shm belonging to the given segments (segment or chain locks).

    Chain locks have secret names: this process knows those of the kernels
    it booted (``turnstile.SECRETS``)."""
    present = set(os.listdir("/dev/shm"))
    return sorted(n for name in names for n in [name, *chain_files(name)] if n in present)


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
