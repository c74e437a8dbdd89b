"""Swarm testing in the stress runner: each run a random half of the
stressors and fault sites, chosen by the run's seed alone."""

from __future__ import annotations

import pytest

from realfork.errors import BadInput
from realfork.stress.config import StressConfig
from realfork.stress.runner import run_stress, swarm_subset

pytestmark = pytest.mark.timeout(120)

INSTANCES = [("fork", {}), ("fork", {}), ("vfork", {}), ("exec", {}), ("lwp", {}),
             ("signal", {}), ("proc", {})]
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
        assert inst == [i for i in INSTANCES if i[0] in names]  # in the configured order
        assert all(FAULTS[s] == k for s, k in faults.items())
        chosen.add(tuple(names))
        sites.add(tuple(sorted(faults)))
    assert len(chosen) > 20 and len(sites) > 8
    assert swarm_subset([("vfork", {})], {}, 3) == ([("vfork", {})], {})


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
