"""footprints.json without an engine, warning by warning: what each unusable file says (once per file
as found, again once it changed), the size limit's edge, the document's checks, and the write."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from modelctl import footprints
from modelctl.footprints import MAX_BYTES, Footprint, read_footprints, record_footprint

FP = Footprint(measured_gib=7.5, vram_gib=8.0, plan_hash="abc123", measured_at=1700000000.0)
ENTRY = {"measured_gib": 7.5, "vram_gib": 8.0, "plan_hash": "abc123", "measured_at": 1700000000.0}
TAIL = " (measurements are only advice; the next switch rewrites it)"


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    monkeypatch.setattr(footprints, "_warned", set())


def warnings_of(caplog) -> list[str]:
    found = [r.getMessage() for r in caplog.records if r.name == "modelctl" and r.levelno == logging.WARNING]
    caplog.clear()
    return found


def state_with(tmp_path: Path, text: str | bytes, name: str = "state") -> Path:
    state = tmp_path / name
    state.mkdir(mode=0o700)
    path = state / "footprints.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return state


def test_exceeds_only_above_the_budget():
    assert Footprint(8.01, 8.0, "h", 0.0).exceeds is True
    assert Footprint(8.0, 8.0, "h", 0.0).exceeds is False
    assert Footprint(7.0, 8.0, "h", 0.0).exceeds is False


def test_a_fifo_is_not_opened_for_ever_and_is_named_as_not_a_regular_file(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "footprints.json")  # a blocking open would wait for a writer for ever
    assert read_footprints(state) == {}
    assert warnings_of(caplog) == [f"ignoring {state / 'footprints.json'}: it is not a regular file{TAIL}"]
    assert read_footprints(state) == {} and warnings_of(caplog) == [], "one warning per file as found"
    os.rename(state / "footprints.json", tmp_path / "old-fifo")  # keeps its inode busy: the next one differs
    os.mkfifo(state / "footprints.json")
    assert read_footprints(state) == {}
    assert warnings_of(caplog) == [f"ignoring {state / 'footprints.json'}: it is not a regular file{TAIL}"]


def test_a_link_warns_again_once_it_points_elsewhere(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    link = state / "footprints.json"
    link.symlink_to(tmp_path / "a.json")
    expected = f"ignoring {link}: it is a symbolic link, never followed{TAIL}"
    assert read_footprints(state) == {} and warnings_of(caplog) == [expected]
    assert read_footprints(state) == {} and warnings_of(caplog) == []
    os.rename(link, tmp_path / "old-link")
    link.symlink_to(tmp_path / "a-longer-target.json")  # another inode and size
    assert read_footprints(state) == {} and warnings_of(caplog) == [expected]


def test_an_unreadable_path_warns_with_the_systems_reason_for_each_path(tmp_path, caplog):
    # A path component over 255 bytes: ENAMETOOLONG, neither missing nor a link.
    first, second = tmp_path / ("a" * 300), tmp_path / ("b" * 300)
    assert read_footprints(first) == {} and read_footprints(second) == {}
    assert warnings_of(caplog) == [
        f"ignoring {first / 'footprints.json'}: File name too long{TAIL}",
        f"ignoring {second / 'footprints.json'}: File name too long{TAIL}",
    ]


def test_a_file_of_another_user_warns_again_once_it_changed(tmp_path, caplog, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    monkeypatch.setattr(footprints, "docker_gid", lambda: None)
    state = state_with(tmp_path, json.dumps({"a": ENTRY}))
    path = state / "footprints.json"
    os.chown(path, 12345, 12345)
    expected = f"ignoring {path}: it belongs to uid 12345, not to you, root or the docker group{TAIL}"
    assert read_footprints(state) == {} and warnings_of(caplog) == [expected]
    assert read_footprints(state) == {} and warnings_of(caplog) == []
    path.write_text(json.dumps({"b": ENTRY}))  # another size
    assert read_footprints(state) == {} and warnings_of(caplog) == [expected]


def test_a_file_of_the_docker_group_is_trusted(tmp_path, caplog, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    monkeypatch.setattr(footprints, "docker_gid", lambda: 4242)
    state = state_with(tmp_path, json.dumps({"a": ENTRY}))
    os.chown(state / "footprints.json", 12345, 4242)
    assert read_footprints(state) == {"a": FP} and warnings_of(caplog) == []


def test_the_size_limit_is_one_mib_exactly(tmp_path, caplog):
    document = json.dumps({"a": ENTRY})
    # leading blanks: cut short, the document would lose its closing brace and fail to parse
    exact = state_with(tmp_path, " " * (MAX_BYTES - len(document)) + document, "exact")
    assert read_footprints(exact) == {"a": FP} and warnings_of(caplog) == []
    over = state_with(tmp_path, " " * (MAX_BYTES + 1 - len(document)) + document, "over")
    assert read_footprints(over) == {}
    assert warnings_of(caplog) == [f"ignoring {over / 'footprints.json'}: it is over 1048576 bytes{TAIL}"]
    (over / "footprints.json").write_text(" " * (MAX_BYTES + 2 - len(document)) + document)
    assert read_footprints(over) == {}
    assert warnings_of(caplog) == [f"ignoring {over / 'footprints.json'}: it is over 1048576 bytes{TAIL}"]


@pytest.mark.parametrize(
    ("document", "why"),
    [
        ([], "expected an object of profiles, got list"),
        ("text", "expected an object of profiles, got str"),
        ({"a": [1]}, "'a': expected an object with measured_gib, vram_gib, plan_hash, measured_at"),
        ({"a": {**ENTRY, "extra": 1}}, "'a': expected an object with measured_gib, vram_gib, plan_hash, measured_at"),
        ({"a": {**ENTRY, "plan_hash": 5}}, "'a': plan_hash must be a string"),
        ({"a": {**ENTRY, "measured_gib": "7.5"}}, "'a': measured_gib must be a finite number"),
        ({"a": {**ENTRY, "vram_gib": True}}, "'a': vram_gib must be a finite number"),
        ({"a": {**ENTRY, "measured_at": None}}, "'a': measured_at must be a finite number"),
    ],
)
def test_a_document_of_another_shape_says_what_is_wrong(tmp_path, caplog, document, why):
    state = state_with(tmp_path, json.dumps(document))
    assert read_footprints(state) == {}
    assert warnings_of(caplog) == [f"ignoring {state / 'footprints.json'}: not a footprints document ({why}){TAIL}"]


def test_infinite_numbers_are_refused(tmp_path, caplog):
    state = state_with(tmp_path, '{"a": {"measured_gib": Infinity, "vram_gib": 8, "plan_hash": "h", "measured_at": 1}}')
    assert read_footprints(state) == {}
    assert warnings_of(caplog)[0].endswith(
        "not a footprints document ('a': measured_gib must be a finite number)" + TAIL
    )


def test_whole_numbers_are_read_as_floats(tmp_path):
    state = state_with(tmp_path, json.dumps({"a": {**ENTRY, "measured_gib": 7, "measured_at": 1700000000}}))
    assert read_footprints(state) == {"a": Footprint(7.0, 8.0, "abc123", 1700000000.0)}


def test_the_reason_is_cut_at_300_characters(tmp_path, caplog):
    state = state_with(tmp_path, json.dumps({"x" * 400: 1}))
    assert read_footprints(state) == {}
    [warning] = warnings_of(caplog)
    why = warning.removeprefix(f"ignoring {state / 'footprints.json'}: ").removesuffix(TAIL)
    assert len(why) == 300 and why.startswith("not a footprints document ('xxx")


def test_the_written_file_is_indented_json_through_a_hidden_partial_file(tmp_path, monkeypatch):
    state = tmp_path / "state"
    renamed: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst):
        renamed.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(footprints.os, "replace", replace)
    monkeypatch.setattr(footprints, "docker_gid", lambda: None)
    record_footprint(state, "a", FP)
    [(partial, final)] = renamed
    assert partial.startswith(".footprints.json.") and partial.endswith(".partial") and final == "footprints.json"
    assert (state / "footprints.json").read_text() == (
        '{\n  "a": {\n    "measured_gib": 7.5,\n    "vram_gib": 8.0,\n    "plan_hash": "abc123",\n'
        '    "measured_at": 1700000000.0\n  }\n}'
    )


def test_the_file_is_private_unless_its_group_is_the_docker_group(tmp_path, monkeypatch):
    monkeypatch.setattr(footprints, "docker_gid", lambda: os.getegid() + 4242)  # a group the file does not get
    record_footprint(tmp_path / "private", "a", FP)
    assert stat.S_IMODE((tmp_path / "private" / "footprints.json").stat().st_mode) == 0o600
    monkeypatch.setattr(footprints, "docker_gid", lambda: None)
    record_footprint(tmp_path / "none", "a", FP)
    assert stat.S_IMODE((tmp_path / "none" / "footprints.json").stat().st_mode) == 0o600


def test_the_file_is_readable_by_the_docker_group_when_it_carries_it(tmp_path, monkeypatch):
    state = tmp_path / "shared"
    state.mkdir(mode=0o700)
    group = os.stat(state).st_gid
    monkeypatch.setattr(footprints, "docker_gid", lambda: group)
    record_footprint(state, "a", FP)
    written = (state / "footprints.json").stat()
    assert (stat.S_IMODE(written.st_mode), written.st_gid) == (0o640, group)


def test_a_malformed_file_warns_again_once_it_changed(tmp_path, caplog):
    state = state_with(tmp_path, "[]")
    expected = f"ignoring {state / 'footprints.json'}: not a footprints document (expected an object of profiles, got list){TAIL}"
    assert read_footprints(state) == {} and warnings_of(caplog) == [expected]
    assert read_footprints(state) == {} and warnings_of(caplog) == []
    (state / "footprints.json").write_text("[ ]")  # another size, the same reason
    assert read_footprints(state) == {} and warnings_of(caplog) == [expected]
