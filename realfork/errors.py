"""Exceptions shared by every layer.

``BadInput`` is what the command line turns into one line on stderr and exit
status 2; ``ResourceError`` into exit status 3.  ``KernelPanic`` unwinds every
kernel thread once the kernel has panicked.
"""

from __future__ import annotations


class RealforkError(Exception):
    """Base class of every error realfork raises on purpose."""


class BadInput(RealforkError, ValueError):
    """The caller gave something impossible: a bad parameter, file or name."""


class ResourceError(RealforkError):
    """The machine cannot give what was asked (memory, /dev/shm space)."""


class StaleReference(RealforkError):
    """A (slot, generation) reference names a slot that was freed or reused."""


class KernelPanic(RealforkError):
    """Raised in kernel threads once the kernel has panicked; they unwind."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report
