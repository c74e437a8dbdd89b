"""Helpers shared by the tests (imported as a plain module: tests/ is on sys.path)."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from realfork.shm.segment import Layout

HERE = Path(__file__).parent
DEFAULT_BACKEND = "threads"  # the ``backend`` fixture switches it per test


def tool(name: str) -> ModuleType:
    """The script tools/<name>.py, imported as a module (tools/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE.parent / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def words_layout(layout: Layout) -> None:
    layout.add("test_words", ctypes.c_int64, 64)



def run_child(name: str, role: str, *args: object, timeout: float = 60) -> subprocess.Popen:
    """Start tests/substrate_child.py in a new OS process attached to ``name``."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, str(HERE / "substrate_child.py"), name, role, *map(str, args)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def boot_checked(**params: object):
    """Boot a kernel; on leaving, run the invariant checker (unless it panicked)
    and shut it down."""
    import contextlib

    import realfork

    @contextlib.contextmanager
    def cm():
        params.setdefault("backend", DEFAULT_BACKEND)
        params.setdefault("nproc", 48)
        params.setdefault("maxlwps", 128)
        params.setdefault("deadlock_timeout", 10.0)
        system = realfork.boot(**params)
        try:
            yield system
            if not system.dom.panicked:
                system.check()
        finally:
            system.close()

    return cm()


def probe_names(result) -> list[str]:
    return [e.name.split(":::")[-1] for e in result.probes]


def run_clean(text: str, timeout: float = 90, **params: object):
    """Run ``text`` on a fresh kernel (checked on the way out); the result,
    which must carry no panic or deadlock report."""
    with boot_checked(**params) as system:
        result = system.run(text, timeout=timeout)
        assert result.report is None, str(result.report)
        return result
