"""The seed's steps and the kernel walk together (tools/fidelity.py,
docs/fidelity.md): every step of the table is anchored in the code, in the
seed's order, or classed with its reason; docs/fidelity.md is the tool's
output; and the check does fail when an anchor goes missing, moves, or names
no step."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from realfork.kernel.profiles import FIXES

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
FORK_PY = Path("realfork/kernel/fork.py")
EIGHT = {"cfork", "getproc", "fork_fail", "forklwp_fail", "forklwp", "newproc", "relvm",
         "vfwait"}


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_fidelity_tool", ROOT / "tools" / "fidelity.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_fidelity_tool"] = mod
    spec.loader.exec_module(mod)
    return mod


fidelity = _tool()


def _copy_tree(tmp: Path) -> Path:
    """The two files the tool reads, copied into a fresh tree."""
    for rel in (Path(fidelity.STEPS_PY), FORK_PY):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp / rel)
    return tmp


def _problems(root: Path) -> list[str]:
    rows, problems = fidelity.collect(str(root))
    return fidelity.check(rows, problems)


def test_every_step_is_anchored_in_the_seeds_order() -> None:
    assert _problems(ROOT) == []


def test_the_table_covers_the_eight_functions() -> None:
    ss = fidelity.load_steps(str(ROOT))
    assert set(ss.FUNCTIONS) == EIGHT == set(ss.STEPS)
    assert all(ss.STEPS[f] for f in EIGHT)


def test_every_class_is_known_with_a_reason_where_one_is_needed() -> None:
    ss = fidelity.load_steps(str(ROOT))
    for fn, steps in ss.STEPS.items():
        for st in steps:
            base = st.cls.split(":", 1)[0]
            assert base in ss.CLASSES, (fn, st)
            if base == "profile":
                assert st.cls.split(":", 1)[1] in FIXES, (fn, st, "names no fix of profiles.FIXES")
            if base != "faithful":
                assert st.reason.strip(), (fn, st, "needs a reason")
            if base == "extra":
                assert not st.anchor and st.find and st.where, (fn, st)
            else:
                assert re.fullmatch(r"fork\.c:\d+|forklwp#\d+", st.anchor), (fn, st)


def test_docs_fidelity_md_is_the_tools_output() -> None:
    rows, problems = fidelity.collect(str(ROOT))
    assert problems == []
    doc = (ROOT / "docs" / "fidelity.md").read_text(encoding="utf-8")
    assert fidelity.BEGIN in doc and fidelity.END in doc
    assert fidelity.splice(doc, fidelity.render_markdown(rows)) == doc, (
        "docs/fidelity.md is out of date: run "
        "python tools/fidelity.py --markdown docs/fidelity.md")


def test_the_counts_add_up() -> None:
    rows, _ = fidelity.collect(str(ROOT))
    per, total = fidelity.counts(rows)
    assert sum(total.values()) == len(rows)
    assert sum(sum(c.values()) for c in per.values()) == len(rows)
    assert total["faithful"] > 0 and total["missing"] > 0


def test_a_step_without_its_anchor_is_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    f = root / FORK_PY
    text = f.read_text(encoding="utf-8")
    assert "  # fork.c:233" in text
    f.write_text(text.replace("  # fork.c:233", ""), encoding="utf-8")
    assert any("fork.c:233" in p and "no comment names it" in p for p in _problems(root))


def test_anchors_out_of_the_seeds_order_are_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    f = root / FORK_PY
    text = f.read_text(encoding="utf-8")
    # swap two faithful steps of cfork's main path: as_dup and sprlock_proc
    assert "# fork.c:233" in text and "# fork.c:237" in text
    text = text.replace("# fork.c:233", "# @@").replace("# fork.c:237", "# fork.c:233")
    f.write_text(text.replace("# @@", "# fork.c:237"), encoding="utf-8")
    assert any("fork.c:233" in p and "against the seed's order" in p for p in _problems(root))


def test_an_anchor_that_names_no_step_is_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    f = root / FORK_PY
    f.write_text(f.read_text(encoding="utf-8") + "\n# fork.c:9999\n", encoding="utf-8")
    assert any("fork.c:9999" in p and "no step of the table" in p for p in _problems(root))


def test_an_anchor_in_a_string_is_not_an_anchor(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    f = root / FORK_PY
    text = f.read_text(encoding="utf-8")
    f.write_text(text.replace("  # fork.c:233", "  ;'# fork.c:233'"), encoding="utf-8")
    assert any("fork.c:233" in p and "no comment names it" in p for p in _problems(root))


def test_an_extra_whose_code_is_gone_is_reported(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    f = root / FORK_PY
    text = f.read_text(encoding="utf-8")
    assert "sysforkall += 1" in text
    f.write_text(text.replace("sysforkall += 1", "sysforkall += 2"), encoding="utf-8")
    assert any("sysforkall += 1" in p for p in _problems(root))


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fidelity.main(["--check"]) == 0
    assert "every one accounted for" in capsys.readouterr().out
    assert fidelity.main([]) == 0
    assert "all" in capsys.readouterr().out
    assert fidelity.main(["--root", str(tmp_path), "--check"]) == 2
    assert "fidelity.py: no step table" in capsys.readouterr().err
    root = _copy_tree(tmp_path)
    f = root / FORK_PY
    f.write_text(f.read_text(encoding="utf-8").replace("  # fork.c:233", ""), encoding="utf-8")
    assert fidelity.main(["--root", str(root), "--check"]) == 1
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n\n" + fidelity.BEGIN + "\nstale table\n" + fidelity.END + "\n\nafter\n")
    assert fidelity.main(["--markdown", str(doc)]) == 0
    new = doc.read_text()
    assert new.startswith("intro\n\n" + fidelity.BEGIN)
    assert new.endswith(fidelity.END + "\n\nafter\n")
    assert "stale table" not in new and "| **all** |" in new
    doc.write_text("no markers\n")
    assert fidelity.main(["--markdown", str(doc)]) == 2
