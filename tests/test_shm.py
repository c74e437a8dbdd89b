"""The shared-memory arena: segments, tables, generations, attach, bad input."""

from __future__ import annotations

import ctypes
import os
import stat

import pytest

from realfork.errors import BadInput, ResourceError, StaleReference
from realfork.shm.segment import Layout, Segment, segment_path
from realfork.sync.domain import Substrate

pytestmark = pytest.mark.timeout(60)


def test_segment_is_private_and_unguessable(dom: Substrate) -> None:
    st = os.stat(segment_path(dom.name))
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    token = dom.name.removeprefix("realfork-")
    assert len(token) >= 24 and int(token, 16) >= 0
    other = Substrate.boot(maxlwps=4, nsync=8)
    try:
        assert other.name != dom.name
    finally:
        other.shutdown()


def test_tables_sized_from_boot_parameters() -> None:
    with Substrate.boot(maxlwps=100, nsync=300, probe_capacity=50) as d:
        assert d.kthreads.capacity == 100
        assert len(d.syncs) == 300
        assert d.ring.capacity == 50


def test_slot_allocation_generations_and_stale_reference(dom: Substrate) -> None:
    table = dom.kthreads
    a = table.alloc()
    assert a is not None
    ref = table.ref(a)
    assert table.deref(ref) == a
    table.free(a)
    with pytest.raises(StaleReference):
        table.deref(ref)
    # the slot comes back with a new generation: the old reference stays stale
    b = table.alloc()
    while b != a:
        b = table.alloc()
    assert table.deref(table.ref(b)) == b
    with pytest.raises(StaleReference):
        table.deref(ref)
    with pytest.raises(StaleReference):
        table.free(a) or table.free(a)


def test_table_full_returns_none_and_counts() -> None:
    with Substrate.boot(maxlwps=3, nsync=4) as d:
        got = [d.kthreads.alloc() for _ in range(3)]
        assert sorted(got) == [0, 1, 2]  # type: ignore[type-var]
        assert d.kthreads.alloc() is None
        assert d.kthreads.hdr.failures == 1
        assert d.kthreads.hdr.hiwater == 3


def test_attach_by_name_reads_every_table(dom: Substrate) -> None:
    dom.new_mutex("pidlock")
    dom.new_cv("p_cv", inst=7, inst_label="pid")
    other = Substrate.attach(dom.name)
    try:
        assert other.params["maxlwps"] == 64
        assert other.sync_name(0) == "pidlock"
        assert other.sync_name(1) == "p_cv[pid 7]"
        assert set(dom.seg.region_names()) == set(other.seg.region_names())
        words = other.seg.region("test_words", ctypes.c_int64)
        words[3] = 42
        assert dom.seg.region("test_words", ctypes.c_int64)[3] == 42
    finally:
        other.shutdown()


@pytest.mark.parametrize("params", [
    {"maxlwps": 0}, {"maxlwps": -5}, {"nsync": 0}, {"probe_capacity": -1},
    {"maxlwps": 2.5}, {"maxlwps": "many"}, {"deadlock_timeout": 0},
    {"deadlock_timeout": -1.0}, {"deadlock_timeout": "soon"}, {"bogus": 1},
])
def test_impossible_boot_parameters_are_bad_input(params: dict) -> None:
    with pytest.raises(BadInput) as e:
        Substrate.boot(**params)
    assert "\n" not in str(e.value)


def test_segment_larger_than_memory_is_a_resource_error() -> None:
    layout = Layout()
    layout.add("huge", ctypes.c_char * (1 << 30), 1 << 14)  # 16 TiB
    with pytest.raises(ResourceError) as e:
        Segment.create(layout)
    assert "does not fit" in str(e.value)
    with pytest.raises(ResourceError):
        Substrate.boot(maxlwps=1 << 30)


def test_attach_to_missing_name_is_bad_input() -> None:
    for name in ("realfork-doesnotexist", "", "../etc/passwd", "realfork-../x"):
        with pytest.raises(BadInput) as e:
            Substrate.attach(name)
        assert "\n" not in str(e.value)


def test_attach_to_another_users_kernel_is_bad_input(dom: Substrate) -> None:
    # A segment file owned by someone else (we are root in CI, so chown works;
    # otherwise the open itself is refused, which must also read clearly).
    path = segment_path("realfork-" + "ab" * 12)
    with open(path, "wb") as f:
        f.write(b"\0" * 4096)
    try:
        os.chmod(path, 0o600)
        if os.geteuid() == 0:
            os.chown(path, 65534, 65534)
        with pytest.raises(BadInput) as e:
            Segment.attach(os.path.basename(path))
        assert "another user" in str(e.value)
    finally:
        os.unlink(path)


def test_attach_to_foreign_file_is_bad_input() -> None:
    path = segment_path("realfork-" + "cd" * 12)
    with open(path, "wb") as f:
        f.write(b"not a kernel" * 1000)
    try:
        os.chmod(path, 0o600)
        with pytest.raises(BadInput) as e:
            Segment.attach(os.path.basename(path))
        assert "not a realfork kernel segment" in str(e.value)
    finally:
        os.unlink(path)
