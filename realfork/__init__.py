"""realfork: the illumos fork subsystem as a real concurrent program."""

from .api import RunResult, System, boot
from .errors import BadInput, KernelPanic, RealforkError, ResourceError, StaleReference
from .user.generate import generate
from .user.parser import parse

__all__ = ["BadInput", "KernelPanic", "RealforkError", "ResourceError", "RunResult",
           "StaleReference", "System", "boot", "generate", "parse"]
