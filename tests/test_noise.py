"""Schedule noise: configuration, where it acts, and that it is seeded."""

from __future__ import annotations

import pytest
from helpers import boot_checked

from realfork.cli import main
from realfork.errors import BadInput
from realfork.sync.noise import NoiseConfig, make_config

pytestmark = pytest.mark.timeout(120)

LOCKY = """
    mov r1, 0
loop:
    fork1
    beq rv, 0, child
    wait rv
    add r1, 1
    blt r1, 20, loop
    exit 0
child:
    exit 0
"""


@pytest.mark.parametrize("spec, word", [
    ({"mode": "loud"}, "mode"), ({"prob": 2}, "probability"), ({"sleep_us": -1}, "sleep_us"),
    ({"sleep_us": 5_000_000}, "more than a second"), ({"colour": 1}, "unknown noise setting"),
])
def test_bad_noise_settings_are_named(spec: dict, word: str) -> None:
    with pytest.raises(BadInput, match=word):
        make_config(spec)


def test_off_by_default_and_no_noise_points_counted() -> None:
    assert make_config(None) == NoiseConfig()
    with boot_checked() as system:
        assert system.run(LOCKY).status == 0
        assert system.dom.noise is None
        assert system.dom.g.noise_delays == 0


@pytest.mark.parametrize("mode", ["contest", "pct"])
def test_noise_delays_threads_at_lock_operations(backend: str, mode: str) -> None:
    with boot_checked(backend=backend, noise={"mode": mode, "prob": 0.2, "seed": 4}) as system:
        assert system.run(LOCKY).status == 0
        g = system.dom.g
        assert g.noise_delays > 0
        if mode == "pct":
            assert g.noise_steps > g.noise_delays  # every point counts, a few delay


def test_same_seed_same_change_points() -> None:
    from realfork.sync.noise import Noise

    class FakeDom:
        pass

    a = Noise(FakeDom(), make_config({"mode": "pct", "seed": 9, "depth": 5}))  # type: ignore[arg-type]
    b = Noise(FakeDom(), make_config({"mode": "pct", "seed": 9, "depth": 5}))  # type: ignore[arg-type]
    c = Noise(FakeDom(), make_config({"mode": "pct", "seed": 10, "depth": 5}))  # type: ignore[arg-type]
    assert a.change_points == b.change_points and len(a.change_points) <= 4
    assert a.change_points != c.change_points


def test_cli_noise_bad_input_is_one_line_and_status_2(tmp_path, capsys) -> None:
    prog = tmp_path / "p.rf"
    prog.write_text("exit 0\n")
    assert main(["run", "--noise-prob", "3", str(prog)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "probability" in err
