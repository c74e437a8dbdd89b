"""Swarm testing in the stress runner: each run a random half of the
stressors and fault sites, chosen by the run's seed alone."""

from __future__ import annotations

import pytest

from realfork.errors import BadInput
from realfork.stress.config import StressConfig
from realfork.stress.runner import run_stress, swarm_subset
from realfork.stress.stressors import STRESSORS, check_options

pytestmark = pytest.mark.timeout(120)

INSTANCES = [(n, check_options(n, {})) for n in
             ("fork", "fork", "vfork", "exec", "lwp", "signal", "proc")]
FAULTS = {"as_dup": {"probability": 5.0}, "forklwp": {"probability": 5.0},
          "pid_assign": {"probability": 1.0}, "holdlwps": {"probability": 2.0}}


def test_a_seed_always_chooses_the_same_subset() -> None:
    for seed in range(50):
        assert swarm_subset(INSTANCES, FAULTS, seed) == swarm_subset(INSTANCES, FAULTS, seed)


def test_subsets_vary_keep_whole_stressors_and_never_run_nothing() -> None:
    chosen = set()
    sites = set()
    for seed in range(200):
        inst, faults = swarm_subset(INSTANCES, FAULTS, seed)
        assert inst, seed
        names = [n for n, _ in inst]
        assert names.count("fork") in (0, 2)  # every instance of a stressor, or none
        assert [n for n, _ in inst] == [n for n, _ in INSTANCES if n in names]  # in order
        for name, opts in inst:
            full = check_options(name, {})
            assert set(opts) == set(full), name
            assert all(v in (0, full[k]) for k, v in opts.items()), (name, opts)
        assert len({repr(o) for n, o in inst if n == "fork"}) <= 1  # instances alike
        assert all(FAULTS[s] == k for s, k in faults.items())
        chosen.add(tuple(names))
        sites.add(tuple(sorted(faults)))
    assert len(chosen) > 20 and len(sites) > 8
    only = swarm_subset([("vfork", check_options("vfork", {}))], {}, 3)[0]
    assert [n for n, _ in only] == ["vfork"]


def test_options_that_can_be_zero_are_sometimes_switched_off() -> None:
    full = check_options("zone", {})
    zeroable = [k for k in full if STRESSORS["zone"].ranges[k][0] == 0 and full[k]]
    assert zeroable
    seen = {k: set() for k in zeroable}
    for seed in range(200):
        for _name, opts in swarm_subset([("zone", full)], {}, seed)[0]:
            for k in zeroable:
                seen[k].add(opts[k])
    assert all(vals == {0, full[k]} for k, vals in seen.items()), seen


def test_swarm_must_be_a_number_of_seconds() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(BadInput, match="swarm"):
            StressConfig(swarm=bad)


def test_a_swarm_campaign_runs_fresh_kernels_until_its_time_is_up() -> None:
    cfg = StressConfig(stressors={"fork": 1, "vfork": 1, "lwp": 1}, timeout=20.0,
                       swarm=0.5, check_interval=0, boot={"nproc": 64, "maxlwps": 256})
    r = run_stress(cfg)
    assert r.findings == []
    assert r.runs >= 2
    assert len(set(r.kernels)) == r.runs  # each run its own kernel
    assert "swarm 0.5 s" in cfg.describe()
