"""Shared-memory layouts of the kernel's objects (``sys/proc.h`` and friends).

Every kernel fact lives here, in tables of the segment.  A pointer between
kernel objects is a slot index + 1 (0 is NULL), as safe as the lock that
protects it; a reference kept across a lock drop is a (slot, generation)
pair (``realfork.shm.table``).

Simplifications, named once:

* A proc table slot is both the ``proc_t`` memory and its /proc directory
  slot; its ``p_lock``, ``p_cv``, ``p_holdlwps``, ``p_lwpexit``,
  ``p_poolcv`` and ``pr_pid_cv`` are allocated per slot at boot, so they
  outlive the proc as the persistent ``proc_lock[]`` does in illumos.
* ``thread_lock`` is a mutex per kernel thread slot (lockdep class
  ``thread_lock``, allocated at boot like ``t_cv``), not a spin lock that
  changes with the thread's state: it is taken inside ``p_lock`` around every
  change of ``t_schedflag`` and of the stop state of a live lwp, as illumos
  takes ``thread_lock(t)``.  A sleeping lwp's wake-up goes through the sleep
  queue's chain locks instead (illumos's thread_lock of a sleeping thread is
  its sleep queue's lock).
* The pid hash is an array indexed by pid.
* An address space is a handful of segments and 64 words (``a_words``) that
  ``load``/``store`` read and write; there are no page tables.
* A ``kthread_t`` (substrate) and a ``klwp_t`` (here) share one slot index.
"""

from __future__ import annotations

import ctypes

from ..shm.table import Slot

c_i32 = ctypes.c_int32
c_u32 = ctypes.c_uint32
c_i64 = ctypes.c_int64
c_u64 = ctypes.c_uint64

NREGS = 11  # r0..r7, rv, err, st (realfork.user.isa.REGISTERS)
ASWORDS = 64  # words of user memory per address space
MAXNAME = 24

# -- p_stat ------------------------------------------------------------------------
SSLEEP, SRUN, SZOMB, SSTOP, SIDL, SONPROC = 1, 2, 3, 4, 5, 6
STAT_NAMES = {0: "free", SSLEEP: "SSLEEP", SRUN: "SRUN", SZOMB: "SZOMB", SSTOP: "SSTOP",
              SIDL: "SIDL", SONPROC: "SONPROC"}

# -- p_flag (2006 sys/proc.h values) -------------------------------------------------
SSYS = 0x1
SEXITING = 0x2
SFORKING = 0x8
SWATCHOK = 0x10
SKILLED = 0x100
SSCONT = 0x200
SZONETOP = 0x400
SEXTKILLED = 0x800
SUGID = 0x2000
SEXECED = 0x4000
SJCTL = 0x10000
SNOWAIT = 0x20000
SVFORK = 0x40000
SVFWAIT = 0x80000
SEXITLWPS = 0x100000
SHOLDFORK = 0x200000
SHOLDFORK1 = 0x800000
SCOREDUMP = 0x1000000
SMSACCT = 0x2000000
SLWPWRAP = 0x4000000
SNOCD = 0x8000000
SHOLDWATCH = 0x20000000
SMSFORK = 0x40000000
PFLAG_NAMES = {v: k for k, v in dict(
    SSYS=SSYS, SEXITING=SEXITING, SFORKING=SFORKING, SWATCHOK=SWATCHOK, SKILLED=SKILLED,
    SEXECED=SEXECED, SJCTL=SJCTL, SNOWAIT=SNOWAIT, SVFORK=SVFORK, SVFWAIT=SVFWAIT,
    SEXITLWPS=SEXITLWPS, SHOLDFORK=SHOLDFORK, SHOLDFORK1=SHOLDFORK1, SCOREDUMP=SCOREDUMP,
    SMSACCT=SMSACCT, SLWPWRAP=SLWPWRAP, SNOCD=SNOCD, SHOLDWATCH=SHOLDWATCH,
    SMSFORK=SMSFORK, SZONETOP=SZONETOP).items()}

# -- p_proc_flag (/proc) ---------------------------------------------------------------
P_PR_TRACE = 0x1
P_PR_PTRACE = 0x2
P_PR_FORK = 0x4
P_PR_LOCK = 0x8
P_PR_ASYNC = 0x10
P_PR_EXEC = 0x20
P_PR_STOPFORK = 0x100  # realfork: u_exitmask contains the fork system calls

# -- p_pidflag ---------------------------------------------------------------------------
CLDPEND = 0x1
CLDCONT = 0x2

# -- p_poolflag ---------------------------------------------------------------------------
PBWAIT = 0x1
PEXITED = 0x2

# -- t_proc_flag (under p_lock) -------------------------------------------------------
TP_DAEMON = 0x1
TP_HOLDLWP = 0x2
TP_TWAIT = 0x4
TP_LWPEXIT = 0x8
TP_PRSTOP = 0x10
TP_CHKPT = 0x20
TP_EXITLWP = 0x40
TP_PRVSTOP = 0x80
TP_MSACCT = 0x100
TP_STOPPING = 0x200
TP_PAUSE = 0x400
TP_WATCHSTOP = 0x4000

# -- t_flag -----------------------------------------------------------------------------
T_WAKEABLE = 0x2
T_FORKALL = 0x10
T_VFPARENT = 0x20  # realfork keeps the modern per-thread "call vfwait" mark

# -- t_schedflag start bits -----------------------------------------------------------
TS_CSTART = 0x0100  # continue after a hold or suspend
TS_UNPAUSE = 0x0200
TS_XSTART = 0x0400  # SIGCONT
TS_PSTART = 0x0800  # /proc
TS_RESUME = 0x1000
TS_CREATE = 0x2000  # creator has finished
TS_ALLSTART = TS_CSTART | TS_UNPAUSE | TS_XSTART | TS_PSTART | TS_RESUME | TS_CREATE

# -- klwp_t.t_kstate: the dispatcher's view of an lwp ---------------------------------
LWP_ONPROC = 1  # running or runnable
LWP_STOPPED = 3  # TS_STOPPED: waits on t_cv for setrun
LWP_ZOMB = 4

# -- why stopped -------------------------------------------------------------------------
PR_REQUESTED = 1
PR_SIGNALLED = 2
PR_SYSENTRY = 3
PR_SYSEXIT = 4
PR_JOBCONTROL = 5
PR_FAULTED = 6
PR_SUSPENDED = 7
PR_CHECKPOINT = 8
SUSPEND_NORMAL = 0
SUSPEND_PAUSE = 1

# -- zone_status --------------------------------------------------------------------
ZONE_IS_RUNNING = 3
ZONE_IS_SHUTTING_DOWN = 4

NIL = 0  # the NULL slot reference

# -- wait codes (p_wcode) -----------------------------------------------------------
CLD_EXITED = 1
CLD_KILLED = 2
CLD_DUMPED = 3


class proc_t(Slot):
    _fields_ = [
        ("p_stat", c_i32),
        ("p_flag", c_u32),  # p_lock
        ("p_proc_flag", c_u32),  # p_lock (/proc)
        ("p_pidflag", c_u32),  # pidlock
        ("p_pid", c_i32),
        ("p_ppid", c_i32),
        ("p_ancpid", c_i32),
        ("p_pgid", c_i32),
        ("p_sid", c_i32),
        # family (pidlock); slot + 1
        ("p_parent", c_i32),
        ("p_child", c_i32),
        ("p_sibling", c_i32),
        ("p_psibling", c_i32),
        ("p_child_ns", c_i32),  # children whose state changed (zombies)
        ("p_sibling_ns", c_i32),
        ("p_orphan", c_i32),
        ("p_nextorph", c_i32),
        ("p_nextofkin", c_i32),
        ("p_next", c_i32),  # practive (pidlock)
        ("p_prev", c_i32),
        ("p_pglink", c_i32),  # next member of the process group
        ("p_ppglink", c_i32),  # previous member (pgexit unlinks without a walk)
        ("p_tasknext", c_i32),  # task member ring (pidlock + p_lock)
        ("p_taskprev", c_i32),
        ("p_pgrp", c_i32),  # pgrp table slot + 1
        ("p_sessp", c_i32),  # the session this proc holds (SESS_HOLD), slot + 1
        # lwps (p_lock)
        ("p_tlist", c_i32),  # kthread id of the first lwp, circular via t_forw
        ("p_lwpcnt", c_i32),
        ("p_lwprcnt", c_i32),
        ("p_lwpdaemon", c_i32),
        ("p_lwpwait", c_i32),
        ("p_zombcnt", c_i32),
        ("p_lwpid", c_i32),  # last lwpid handed out
        ("p_agenttp", c_i32),  # kthread id of the /proc agent lwp
        ("p_lwpdir", c_i32),  # lwp directory block + 1 (lwpdir table)
        ("p_lwpdir_sz", c_i32),
        ("p_lwpfree", c_i32),  # first free directory entry index, -1 none
        ("p_tidhash_sz", c_i32),
        # resources
        ("p_cred", c_i32),
        ("p_task", c_i32),
        ("p_pool", c_i32),
        ("p_zone", c_i32),
        ("p_as", c_i32),
        ("p_ct_process", c_i32),
        ("p_rctls", c_i32),
        ("p_exec", c_i32),  # vnodes
        ("p_execdir", c_i32),
        ("u_cdir", c_i32),
        ("u_rdir", c_i32),
        ("p_poolcnt", c_i32),  # p_lock
        ("p_poolflag", c_i32),
        ("p_fcnt", c_i32),  # references on the open-file table
        ("p_corefile", c_i32),  # core-file pattern held (corectl table slot + 1), p_lock
        ("p_content", c_i32),  # core-file content held (corectl table slot + 1), p_lock
        ("p_wpage", c_i32),  # stashed watched pages (vfork parent)
        ("p_wcount", c_i32),  # watch areas
        # signals (p_lock)
        ("p_sig", c_u64),  # pending to the process
        ("p_ignore", c_u64),  # SIG_IGN dispositions
        ("p_catch", c_u64),  # caught dispositions (else SIG_DFL)
        ("p_sigmask", c_u64),  # /proc traced signals
        ("p_stopsig", c_i32),
        # exit status
        ("p_wcode", c_i32),  # CLD_EXITED, CLD_KILLED ...
        ("p_wdata", c_i32),
        ("p_brksize", c_i64),
        ("p_stksize", c_i64),
        ("p_start_ns", c_i64),
        ("p_host_pid", c_i32),  # the OS process running its lwps
        ("p_host", c_i32),  # processes backend: host table slot + 1
        ("p_exitstat", c_i32),  # status as a parent's wait sees it
        ("p_agent_errno", c_i32),  # the result of the last /proc agent's fork
        ("p_agent_done", c_i32),
        ("p_prowner", c_i32),  # kthread id holding P_PR_LOCK (p_lock), 0 none
        ("p_prfile", c_i32),  # has the /proc file open (prlock; inherited by fork)
        # DTrace and shared memory (realfork.kernel.dtrace)
        ("p_dtrace_helpers", c_i32),  # helper providers registered (dtrace_lock)
        ("p_dtrace_count", c_i32),  # enabled USDT tracepoints (under the proc's P_PR_LOCK)
        ("p_segacct", c_i32),  # shared memory attachments (shm_lock, then p_lock)
    ]


class klwp_t(ctypes.Structure):
    """The lwp half of a kernel thread, at the same slot as its ``kthread_t``."""

    _fields_ = [
        ("t_procp", c_i32),  # proc slot + 1
        ("t_tid", c_i32),  # lwpid
        ("t_forw", c_i32),  # p_tlist neighbours (kthread ids)
        ("t_back", c_i32),
        ("t_proc_flag", c_u32),  # p_lock
        ("t_flag", c_u32),
        ("t_schedflag", c_u32),  # p_lock and thread_lock
        ("t_kstate", c_i32),  # LWP_ONPROC / LWP_STOPPED / LWP_ZOMB
        ("t_whystop", c_i32),
        ("t_whatstop", c_i32),
        ("t_dslot", c_i32),  # directory entry index
        ("t_sysnum", c_i32),  # system call in progress (isa op index + 1), 0 none
        ("t_post_sys", c_i32),
        ("lwp_errno", c_i32),
        ("lwp_rval1", c_i64),
        ("lwp_rval2", c_i64),
        ("lwp_cursig", c_i32),
        ("lwp_asleep", c_i32),
        ("lwp_nostop", c_i32),
        ("t_hold", c_u64),  # blocked signals
        ("t_sig", c_u64),  # pending to this lwp
        ("t_start_ns", c_i64),
        ("t_cpu_ns", c_i64),
        ("lwp_utime0", c_i64),  # the OS thread's user and system CPU (us) when the
        ("lwp_stime0", c_i64),  # lwp started running there: lwp-exit reports the difference
        ("pc", c_i64),  # user context: saved at every kernel entry
        ("spinleft", c_i64),  # steps left of an interrupted spin
        ("regs", c_i64 * NREGS),
    ]


class lwpdir_t(ctypes.Structure):
    """One entry of a process's lwp directory (``lwpdir_t`` + its ``lwpent_t``)."""

    _fields_ = [
        ("ld_used", c_i32),  # holds an lwpent
        ("le_lwpid", c_i32),
        ("le_thread", c_i32),  # kthread id, 0 for a zombie lwp
        ("ld_next", c_i32),  # next on the hash chain or the free list, -1 none
        ("ld_hash", c_i32),  # when this index is < tidhash_sz: bucket head, -1 none
        ("le_start", c_i64),
    ]


class as_t(Slot):
    _fields_ = [
        ("a_nprocs", c_i32),  # processes using it (2 while vfork borrows it)
        ("a_nsegs", c_i32),
        ("a_wpage", c_i32),  # watched pages
        ("a_dups", c_i32),  # how many times it was copied (as_dup)
        ("a_words", c_i64 * ASWORDS),
    ]


class cred_t(Slot):
    _fields_ = [
        ("cr_ref", c_i32),
        ("cr_uid", c_i32),
        ("cr_ruid", c_i32),
        ("cr_gid", c_i32),
        ("cr_zone", c_i32),  # zone slot + 1
        ("cr_priv_fork", c_i32),  # PRIV_PROC_FORK
        ("cr_priv_resource", c_i32),  # PRIV_SYS_RESOURCE
    ]


class vnode_t(Slot):
    _fields_ = [("v_count", c_i32), ("v_name", ctypes.c_char * MAXNAME)]


CORECTL_PATH, CORECTL_CONTENT = 1, 2  # corectl_t.cc_kind


class corectl_t(Slot):
    """A core-file pattern (``corectl_path_t``) or content (``corectl_content_t``):
    reference counted, freed when the last hold goes (the counts are atomic
    in illumos: a chain lock here)."""

    _fields_ = [("cc_ref", c_i32), ("cc_kind", c_i32), ("cc_value", c_i64),
                ("cc_default", c_i32)]  # a zone default: the kernel keeps one hold


class task_t(Slot):
    _fields_ = [
        ("tk_tkid", c_i32),
        ("tk_hold_count", c_i32),
        ("tk_nlwps", c_i32),  # zone_nlwps_lock
        ("tk_nlwps_ctl", c_i32),  # max-lwps rctl (-1 none)
        ("tk_proj", c_i32),
        ("tk_zone", c_i32),
        ("tk_memb_list", c_i32),  # proc slot + 1, circular via p_tasknext
    ]


class kproject_t(Slot):
    _fields_ = [("kpj_id", c_i32), ("kpj_nlwps", c_i32), ("kpj_ntasks", c_i32),
                ("kpj_nlwps_ctl", c_i32)]


class zone_t(Slot):
    _fields_ = [("zone_id", c_i32), ("zone_status", c_i32), ("zone_nlwps", c_i32),
                ("zone_nlwps_ctl", c_i32)]


class pool_t(Slot):
    _fields_ = [("pool_id", c_i32), ("pool_ref", c_i32)]


class upcount_t(ctypes.Structure):
    """One (ruid, zone) entry of the per-user process count (pidlock)."""

    _fields_ = [("up_used", c_i32), ("up_uid", c_i32), ("up_zone", c_i32),
                ("up_count", c_i32)]


class pident_t(ctypes.Structure):
    """``struct pid`` for one pid value (pidlinklock)."""

    _fields_ = [("pid_used", c_i32), ("pid_prslot", c_i32), ("pid_ref", c_i32),
                ("pid_prinactive", c_i32)]


class pgrp_t(Slot):
    _fields_ = [("pg_id", c_i32), ("pg_members", c_i32), ("pg_head", c_i32),
                ("pg_sess", c_i32)]


class sess_t(Slot):
    _fields_ = [("s_sid", c_i32), ("s_ref", c_i32)]


class contract_t(Slot):
    _fields_ = [("ct_id", c_i32), ("ct_ref", c_i32), ("conp_nmembers", c_i32)]


class rctlset_t(Slot):
    _fields_ = [("rcs_nvalues", c_i32), ("rcs_ref", c_i32)]


class kglobals_t(ctypes.Structure):
    _fields_ = [
        ("nproc", c_i32),  # pidlock
        ("v_proc", c_i32),
        ("v_maxup", c_i32),
        ("v_maxupttl", c_i32),
        ("maxpid", c_i32),
        ("minpid", c_i32),
        ("mpid", c_i32),  # last pid handed out (pidlinklock)
        ("fork_fail_pending", c_i32),  # pidlock
        ("ncpus", c_i32),
        ("practive", c_i32),  # head of the active list, proc slot + 1
        ("procovf", c_i32),
        ("proc_init", c_i32),  # init's slot + 1 (0 between runs)
        ("task0", c_i32),
        ("pool_default", c_i32),
        ("global_zone", c_i32),
        ("kas", c_i32),  # the kernel address space
        ("sys_contract", c_i32),
        ("corectl_path", c_i32),  # the default core-file pattern (corectl slot + 1)
        ("corectl_content", c_i32),  # the default core-file content
        ("fcnt", c_i32),  # open-file table references
        ("next_taskid", c_i32),
        ("next_ctid", c_i32),
        ("pool_barrier_count", c_i32),
        ("init_exited", c_i32),  # set when the run's init has become a zombie
        ("init_status", c_i32),
        ("run_seq", c_i32),
        ("program_len", c_i32),
        ("pausing", c_i32),  # pauses in progress: lwps park in sig_check (kernel.pause)
        ("progress", c_u64),  # bumped by every system call: the kernel is alive
        ("sysprobes", c_i32),  # fire syscall:::return (number, latency, errno) when set
        # counters (monotonic, racy increments are under the named lock)
        ("sysfork", c_u64),  # pidlock
        ("sysvfork", c_u64),
        ("sysforkall", c_u64),
        ("fork_fail", c_u64),
        ("syscalls", c_u64),
        ("nexec", c_u64),
        ("nexit", c_u64),
        ("nlwp_create", c_u64),
        ("holds", c_u64),
        ("vfork_waits", c_u64),
        ("shm_nattch", c_i32),  # attachments to the shared memory segment (shm_lock)
        ("dtrace_nprov", c_i32),  # USDT providers registered (dtrace_lock)
    ]


PROGRAM_BYTES = 1 << 20


class ksyncmap_t(ctypes.Structure):
    """Where the kernel's synchronization objects are, so attachers find them."""

    _fields_ = [
        ("procsync_base", c_i32),  # NPROCSYNC per proc slot
        ("tcv_base", c_i32),  # t_cv per kthread slot
        ("tlock_base", c_i32),  # thread_lock per kthread slot
        ("aslock_base", c_i32),  # a_lock per address space slot
        ("rcslock_base", c_i32),  # rcs_lock per rctl set slot
        ("ctlock_base", c_i32),  # ct_lock per contract slot
        ("pidlock", c_i32),
        ("pidlinklock", c_i32),
        ("pr_pidlock", c_i32),
        ("zone_nlwps_lock", c_i32),
        ("pool_barrier_lock", c_i32),
        ("pool_barrier_cv", c_i32),
        ("task_hash_lock", c_i32),
        ("run_cv", c_i32),  # the supervisor waits here for init to exit
        ("pause_lock", c_i32),  # realfork.kernel.pause: the gate lwps park at
        ("pause_cv", c_i32),
        ("f_tlock", c_i32),  # the /proc file's f_tlock (prlock, fcnt_add)
        ("dtrace_meta_lock", c_i32),  # realfork.kernel.dtrace: the DTrace stand-ins
        ("mod_lock", c_i32),
        ("dtrace_lock", c_i32),
        ("shm_lock", c_i32),  # the shared memory segment's ipc lock
    ]
