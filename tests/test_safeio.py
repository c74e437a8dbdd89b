"""realfork.safeio: writes that a planted link or directory cannot redirect, bounded reads.

A second, hostile user is simulated with links and directories the test makes
itself (no second account is needed): the checks are on ownership, mode and
file type, which the test can arrange.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from realfork.errors import BadInput
from realfork.safeio import (
    check_output_path,
    create_new,
    private_dir,
    read_bounded,
    shorten,
    write_replacing,
)

pytestmark = pytest.mark.timeout(30)


def test_private_dir_is_created_0700_and_reused(tmp_path: Path) -> None:
    d = tmp_path / "out"
    private_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    private_dir(d)  # an existing private directory is fine


def test_private_dir_refuses_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (tmp_path / "out").symlink_to(victim)
    with pytest.raises(BadInput, match="symbolic link"):
        private_dir(tmp_path / "out")


def test_private_dir_refuses_a_directory_others_may_write(tmp_path: Path) -> None:
    d = tmp_path / "planted"
    d.mkdir()
    os.chmod(d, 0o777)
    with pytest.raises(BadInput, match="writable by other users"):
        private_dir(d)


def test_private_dir_refuses_another_users_directory(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, 12345, 12345)
    with pytest.raises(BadInput, match="belongs to another user"):
        private_dir(d)


def test_create_new_never_writes_through_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "f").symlink_to(victim)
    with pytest.raises(BadInput, match="already exists"):
        create_new(tmp_path / "f", b"attack")
    assert victim.read_bytes() == b"precious"
    create_new(tmp_path / "g", b"data")
    assert (tmp_path / "g").read_bytes() == b"data"
    assert stat.S_IMODE((tmp_path / "g").stat().st_mode) == 0o600


def test_write_replacing_replaces_a_planted_link_instead_of_following_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out.json"
    out.symlink_to(victim)
    write_replacing(out, "{}")
    assert victim.read_bytes() == b"precious"
    assert not out.is_symlink() and out.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".realfork-")] == []


@pytest.mark.parametrize("target", ["/proc/self/comm", "/dev/null", "/sys/kernel/x"])
def test_output_paths_under_virtual_filesystems_are_refused(target: str) -> None:
    with pytest.raises(BadInput, match="refusing"):
        check_output_path(target)


def test_output_path_checks_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        check_output_path(tmp_path / "missing" / "f")
    with pytest.raises(BadInput, match="is a directory"):
        check_output_path(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="not a directory"):
        check_output_path(tmp_path / "file" / "f")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="not a regular file"):
        check_output_path(fifo)


def test_read_bounded_refuses_devices_fifos_directories_and_large_files(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not a regular file"):
        read_bounded("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="not a regular file"):
        read_bounded(fifo)  # opened without blocking, refused without waiting for a writer
    with pytest.raises(BadInput, match="is a directory"):
        read_bounded(tmp_path)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(BadInput, match="at most 100"):
        read_bounded(big, limit=100)
    assert read_bounded(big, limit=101) == b"x" * 101
    with pytest.raises(BadInput, match="no such file"):
        read_bounded(tmp_path / "nope")


def test_shorten_cuts_long_tokens_to_one_short_line() -> None:
    assert shorten("abc") == "abc"
    s = shorten("9" * 100_000)
    assert len(s) <= 90 and "100,000 chars" in s
