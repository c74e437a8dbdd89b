"""Verification of the emulated kernel: what checks it, as opposed to what it is.

``realfork.kernel`` is the illumos fork subsystem, one module per illumos
file; this package holds the emulator's own verification, which illumos does
not have and which the kernel does not need to run:

=======================  ==============================================================
``check``                the invariant checker: ``violations(K)``, ``check_kernel(K)``,
                         ``InvariantViolation`` (docs/kernel.md, "Invariants")
``quiesce``              the checker's driver on a running kernel: ``pause``, ``resume``,
                         ``check_running``, ``quiescence`` (waiting for a quiescent
                         point, the fingerprints that make a read stable)
``detectors``            the catalogue of every detector: the kernel's assertions,
                         the invariants, deadlines and lost wake-ups, lockdep
``bugs``                 the catalogue of seeded kernel bugs: what each does, the
                         finding it must produce, the stress campaign that finds it
=======================  ==============================================================

The layering rule.  ``verify`` sits right above the kernel
(shm < sync < probes < kernel < verify < machine < user < tools;
docs/architecture.md, tests/test_layers.py): it may import ``kernel``,
``probes``, ``sync``, ``shm`` and the leaves ``errors``/``safeio``, never a
backend, the user language or a tool.  The kernel imports nothing from
``verify``, not even at run time.  What the kernel must call while it runs
are small hooks that stay in the kernel, beside the code that calls them:

* ``realfork.kernel.pause.pause_gate``, where a user lwp parks while a
  pauser (``quiesce``) looks; the protocol is documented in ``quiesce``;
* ``realfork.kernel.detect``, the assertions (``assert_held``, ``proc_link``,
  ``zone_of`` ...) that panic the kernel at the place a mistake shows;
  ``detectors`` catalogues them with the others;
* ``realfork.kernel.bugnames``, the seeded bugs' names that ``params``
  accepts and ``K.bug(name)`` tests; ``bugs`` describes them, under the same
  names (tests/test_bugs.py checks they agree).

The tools reach this package directly (``realfork.api``'s ``check`` and
``check_running``, the stress runner, ``realfork bugs`` in
``realfork.bugs_command``, tools/hunt.py).
"""
