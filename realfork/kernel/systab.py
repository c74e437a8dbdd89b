"""The system-call table: names and numbers, no handlers.

A leaf (it imports nothing), so that the checker, the pause driver, the
stress tools and the dashboards can name system calls without importing
``syscall``, which imports the rest of the kernel.  The handlers, one per
name, are ``syscall.HANDLERS``.
"""

from __future__ import annotations

__all__ = ["FORKS", "SYSCALLS", "SYSNUM", "SYS_vfork", "SYS_wait"]

# System calls by name; a system call's number is its position + 1.
SYSCALLS = ("fork1", "forkall", "vfork", "exit", "exec", "wait", "getpid", "getppid",
            "lwp_create", "lwp_exit", "lwp_self", "lwp_suspend", "lwp_continue", "lwp_wait",
            "sleep", "kill", "sigaction", "sigmask", "setuid", "prlock", "pragent", "prfork",
            "prstopfork", "prrun", "dtrace_helper", "usdt_enable", "shmat", "coreadm",
            "zone_create")
SYSNUM = {name: i + 1 for i, name in enumerate(SYSCALLS)}
SYS_vfork = SYSNUM["vfork"]
FORKS = (SYSNUM["fork1"], SYSNUM["forkall"], SYSNUM["vfork"])
SYS_wait = SYSNUM["wait"]
