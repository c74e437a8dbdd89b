"""illumos signal numbers (usr/src/uts/common/sys/iso/signal_iso.h).

Only signals 1..27 are emulated, so ``NSIG`` is 28 here (illumos itself has
more).  ``SIGCLD`` is an alias of ``SIGCHLD``; ``SIGNAL_NAMES`` gives the
``SIGCHLD`` spelling.
"""

from __future__ import annotations

SIGHUP = 1
SIGINT = 2
SIGQUIT = 3
SIGILL = 4
SIGTRAP = 5
SIGABRT = 6
SIGEMT = 7
SIGFPE = 8
SIGKILL = 9
SIGBUS = 10
SIGSEGV = 11
SIGSYS = 12
SIGPIPE = 13
SIGALRM = 14
SIGTERM = 15
SIGUSR1 = 16
SIGUSR2 = 17
SIGCHLD = 18
SIGPWR = 19
SIGWINCH = 20
SIGURG = 21
SIGPOLL = 22
SIGSTOP = 23
SIGTSTP = 24
SIGCONT = 25
SIGTTIN = 26
SIGTTOU = 27

SIGCLD = SIGCHLD

NSIG = 28
"""One more than the highest emulated signal number."""

SIGNAL_NAMES: dict[int, str] = {
    value: name
    for name, value in globals().items()
    if name.startswith("SIG") and name.isupper() and name != "SIGCLD"
}
"""Signal number to name, e.g. ``SIGNAL_NAMES[9] == "SIGKILL"``."""

SIGNALS: dict[str, int] = {name: value for value, name in SIGNAL_NAMES.items()}
"""Signal name to number, aliases included (``SIGCLD``)."""
SIGNALS["SIGCLD"] = SIGCLD

assert sorted(SIGNAL_NAMES) == list(range(1, NSIG)), "signal table has a hole"
