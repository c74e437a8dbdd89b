"""The ``processes`` backend: every emulated process is hosted by its own OS
process, and its lwps are real threads there.

Three kinds of OS process share the segment:

* the **supervisor** (the caller of ``realfork.boot``) does p0's work;
* the **fork server**, forked from the supervisor at boot, single-threaded,
  keeps a pool of idle hosts (``HostTable.want_idle``), reaps dead hosts and
  panics the kernel when one dies unexpectedly, and is the surviving cleaner:
  when the supervisor's pipe reaches end-of-file without an orderly shutdown
  (the supervisor was killed), it kills every host and removes the segment
  and its semaphores;
* **hosts**, forked by the fork server, each running one emulated process at a
  time.  A host's threads are one dispatcher (its main thread, which starts
  lwp threads when the kernel posts them) plus one thread per lwp.  Hosts
  die with the fork server (``PR_SET_PDEATHSIG``).

Neither the fork server nor a host acts on SIGINT or SIGTERM (both ignore
them, and hosts inherit that): a signal could otherwise interrupt their main
thread inside a host-table or kernel operation.  The supervisor decides how
the kernel ends (``realfork.sync.sigdefer``); they stop when it closes the
kernel, or when it dies (end-of-file on its pipe).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING

from ..errors import KernelPanic
from ..shm import libc
from ..shm.segment import remove_name, segment_path
from ..shm.turnstile import ChainLocks
from ..sync import sigdefer
from ..sync.kthread import KThread
from .backend import LwpBody, _run_lwp
from .hosts import H_ASSIGNED, H_DEAD, H_IDLE, H_STARTING, HostTable
from .threads import ThreadFactory

if TYPE_CHECKING:
    from ..kernel.kernel import Kernel

PR_SET_PDEATHSIG = 1
WANT_IDLE = 4


def _die_with_parent() -> None:
    libc.libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ProcessesMachine:
    """Places lwps on the host of their process (this OS process or another)."""

    name = "processes"

    def __init__(self, K: Kernel, user_body: LwpBody, system_body: LwpBody,
                 host_index: int = -1) -> None:
        self.K = K
        self.hosts = HostTable(K.dom.seg, K.dom.chains)
        self.host_index = host_index  # -1: the supervisor or the fork server
        self.factory = ThreadFactory(K.dom)
        self.user_body = user_body
        self.system_body = system_body
        self.running = 0  # lwp threads of this host still running
        self.started = 0
        self._lock = threading.Lock()
        self.forkserver_pid = 0
        self._wfd = -1

    # -- placement ----------------------------------------------------------------

    def start_lwp(self, t: KThread) -> None:
        K = self.K
        p = K.proc(K.lwps[t.slot].t_procp)
        s = p.s
        if not s.p_host:
            deadline = time.monotonic_ns() + K.dom.timeout_ns
            i = self.hosts.assign(p.slot, s.p_pid, deadline, lambda: K.dom.g.panicked)
            s.p_host = i + 1
            s.p_host_pid = self.hosts.hosts[i].os_pid
        i = s.p_host - 1
        if i == self.host_index:
            self.start_here(t)
        else:
            self.hosts.post_start(i, t.id)

    def start_here(self, t: KThread) -> None:
        K = self.K
        body = self.system_body if K.lwps[t.slot].pc == -2 else self.user_body
        with self._lock:
            self.running += 1
            self.started += 1
        self.factory.start(t, self._counted, body, t)

    def _counted(self, body: LwpBody, t: KThread) -> None:
        try:
            _run_lwp(body, self.K, t)
        finally:
            with self._lock:
                self.running -= 1
            if self.host_index >= 0:  # tell the dispatcher: maybe back to idle
                libc.sem_post(self.hosts.host_sem(self.hosts.hosts[self.host_index]))

    # -- the supervisor's side --------------------------------------------------------

    def start(self) -> None:
        """Fork the fork server (call before any lwp is started)."""
        K = self.K
        self.hosts.format(WANT_IDLE)
        rfd, wfd = os.pipe()
        # SIGINT and SIGTERM stay pending across the fork: the child ignores
        # them before it could run our handlers (a terminal's ^C reaches the
        # whole process group; the supervisor alone decides how the kernel
        # stops), and we record the child before a handler can raise here.
        with sigdefer.blocked():
            pid = os.fork()
            if pid == 0:  # the fork server
                code = 0
                try:
                    sigdefer.ignore_stop_signals()  # its hosts inherit that
                    os.close(wfd)
                    forkserver_main(K, self, rfd)
                except BaseException:  # pragma: no cover - reported, then gone
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            os.close(rfd)
            self._wfd = wfd
            self.forkserver_pid = pid
            self.hosts.pool.forkserver_pid = pid
            K.dom.on_shutdown.append(self.close)

    def close(self) -> None:
        """Orderly end: the fork server sees the pipe close, lets the hosts
        finish (the kernel is shutting down), and exits; we reap it."""
        if self._wfd < 0:
            return
        os.close(self._wfd)
        self._wfd = -1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.forkserver_pid, os.WNOHANG)
            if pid:
                return
            time.sleep(0.01)
        os.kill(self.forkserver_pid, signal.SIGKILL)  # pragma: no cover
        os.waitpid(self.forkserver_pid, 0)  # pragma: no cover


# -- the fork server ----------------------------------------------------------------------


def forkserver_main(K: Kernel, sup: ProcessesMachine, rfd: int) -> None:
    dom = K.dom
    hosts = sup.hosts
    g = dom.g
    children: dict[int, int] = {}  # os pid -> host index
    orderly = False
    while True:
        while not g.shutting_down and not g.panicked and hosts.shortfall() > 0:
            i = hosts.reserve_slot()
            if i < 0:
                break
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(rfd)
                    _die_with_parent()
                    host_main(K, sup, i)
                except BaseException:  # pragma: no cover
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            hosts.hosts[i].os_pid = pid
            hosts.pool.created += 1
            children[pid] = i
        libc.sem_wait_until(hosts.req_sem, time.monotonic_ns() + 50_000_000)
        # dead hosts
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            i = children.pop(pid, -1)
            if i < 0:
                continue
            h = hosts.hosts[i]
            if not g.shutting_down and not g.panicked and h.state in (H_ASSIGNED, H_IDLE,
                                                                           H_STARTING):
                why = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                       else f"exit status {os.WEXITSTATUS(status)}")
                who = f"emulated pid {h.pid}" if h.state == H_ASSIGNED else "no process"
                h.state = H_DEAD
                try:
                    dom.panic(f"host process {pid} (hosting {who}) died of {why}",
                              kind="panic")
                except KernelPanic:
                    pass
            else:
                h.state = H_DEAD
        # the supervisor: an orderly close, or gone
        if select.select([rfd], [], [], 0)[0] and not os.read(rfd, 1):
            orderly = bool(g.shutting_down)
            break
    # end: let the hosts finish, then make sure
    deadline = time.monotonic() + (5 if orderly else 0)
    while children and time.monotonic() < deadline:
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.01)
    for pid in list(children):
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    if not orderly:  # the supervisor died: nobody else will clean up
        remove_name(segment_path(dom.name))
        ChainLocks.unlink_names(dom.name)


# -- a host --------------------------------------------------------------------------------


def host_main(K: Kernel, sup: ProcessesMachine, i: int) -> None:
    from ..kernel.sig import sig_pending_hook

    dom = K.dom
    g = dom.g
    machine = ProcessesMachine(K, sup.user_body, sup.system_body, host_index=i)
    K.machine = machine
    dom.sig_pending = sig_pending_hook(K)
    dom.local_threads.clear()
    dom.on_shutdown.clear()
    hosts = machine.hosts
    h = hosts.hosts[i]
    h.os_pid = os.getpid()
    sem = hosts.host_sem(h)
    hosts.become_idle(i)
    while not g.shutting_down and not g.panicked:
        libc.sem_wait_until(sem, time.monotonic_ns() + 200_000_000)
        for tid in hosts.take_starts(i):
            machine.start_here(K.thread(tid))
        with machine._lock:
            done = machine.started and machine.running == 0
        if done and h.state == H_ASSIGNED and h.head == h.tail:
            machine.started = 0
            hosts.become_idle(i)  # the emulated process is gone: serve another
    # the kernel is ending: the lwp threads wake up and unwind; wait for them
    deadline = time.monotonic() + 5
    for t in list(dom.local_threads):
        th = t.os_thread
        if th is not None:
            th.join(max(0.0, deadline - time.monotonic()))

