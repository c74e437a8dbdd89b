"""User programs: the instruction set, text and msgpack forms.

The interpreter and the program generator build on ``isa`` (the instruction
table) and ``program`` (the data model).
"""

from realfork.user.codec import from_msgpack, to_msgpack
from realfork.user.parser import format_program, parse
from realfork.user.program import Program, ProgramError

__all__ = [
    "Program",
    "ProgramError",
    "format_program",
    "from_msgpack",
    "parse",
    "to_msgpack",
]
