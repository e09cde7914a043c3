"""footprints.json: measurements are advice - a bad file is ignored with one warning, the file is
written through mkstemp and an atomic rename, and no planted link is ever followed."""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import stat
import tempfile

import pytest

from modelctl import footprints
from modelctl.footprints import Footprint, read_footprints, record_footprint

FP = Footprint(measured_gib=7.5, vram_gib=8.0, plan_hash="abc123", measured_at=1700000000.0)
DOCUMENT = {"dots-ocr": {"measured_gib": 7.5, "vram_gib": 8.0, "plan_hash": "abc123", "measured_at": 1700000000.0}}


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "modelctl" and r.levelno == logging.WARNING]


def test_recorded_footprints_read_back(tmp_path):
    state = tmp_path / "state"
    record_footprint(state, "dots-ocr", FP)
    assert read_footprints(state) == {"dots-ocr": FP}
    assert json.loads((state / "footprints.json").read_text()) == DOCUMENT
    assert sorted(p.name for p in state.iterdir()) == ["footprints.json"]  # no temporary file left
    written = (state / "footprints.json").stat()
    group = os.stat(state).st_gid
    if group == footprints.docker_gid():
        assert (stat.S_IMODE(written.st_mode), written.st_gid) == (0o640, group)
    else:
        assert stat.S_IMODE(written.st_mode) == 0o600


def test_temporary_file_comes_from_mkstemp_in_the_state_directory(tmp_path, monkeypatch):
    made = []
    real_mkstemp = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        made.append((str(kwargs.get("dir")), os.path.dirname(name), stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    record_footprint(tmp_path, "dots-ocr", FP)
    assert made == [(str(tmp_path), str(tmp_path), 0o600)]


def test_a_link_planted_at_the_old_predictable_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o644)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    planted = state / f".footprints.json.{os.getpid()}"
    planted.symlink_to(victim)
    record_footprint(state, "dots-ocr", FP)
    assert victim.read_text() == "root's file\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert planted.is_symlink()  # left alone
    assert not (state / "footprints.json").is_symlink()
    assert json.loads((state / "footprints.json").read_text()) == DOCUMENT


ENTRY = '"vram_gib": 1, "plan_hash": "h", "measured_at": 0'
MALFORMED = {
    "list": b"[]",
    "number-entry": b'{"a": 1}',
    "not-json": b"not json",
    "string-figure": b'{"a": {"measured_gib": "x", %s}}' % ENTRY.encode(),
    "bool-figure": b'{"a": {"measured_gib": true, %s}}' % ENTRY.encode(),
    "missing-keys": b'{"a": {"measured_gib": 1}}',
    "not-utf8": b"\xff\xfe",
}


@pytest.mark.parametrize("content", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_footprints_are_ignored_with_one_warning(tmp_path, caplog, content):
    (tmp_path / "footprints.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="modelctl"):
        assert read_footprints(tmp_path) == {}
        assert read_footprints(tmp_path) == {}  # `status` polled again: no second warning
    (warning,) = warnings_of(caplog)
    assert warning.startswith(f"ignoring {tmp_path}/footprints.json: not a footprints document (")
    assert warning.endswith("(measurements are only advice; the next switch rewrites it)")
    record_footprint(tmp_path, "dots-ocr", FP)  # and the next measurement replaces it
    assert read_footprints(tmp_path) == {"dots-ocr": FP}


def test_a_linked_footprints_file_is_not_followed(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(DOCUMENT))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "footprints.json").symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="modelctl"):
        assert read_footprints(state) == {}
    assert warnings_of(caplog) == [
        (
            f"ignoring {state}/footprints.json: it is a symbolic link, never followed "
            "(measurements are only advice; the next switch rewrites it)"
        )
    ]
    record_footprint(state, "dots-ocr", FP)
    assert elsewhere.read_text() == json.dumps(DOCUMENT)  # replaced the link, not written through it
    assert not (state / "footprints.json").is_symlink()


def test_footprints_of_another_user_are_ignored(tmp_path, caplog):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user (os.chown); CI runs the tests as root")
    try:
        uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no user nobody or group nogroup on this machine to play the other user")
    (tmp_path / "footprints.json").write_text(json.dumps(DOCUMENT))
    os.chown(tmp_path / "footprints.json", uid, gid)
    with caplog.at_level(logging.WARNING, logger="modelctl"):
        assert read_footprints(tmp_path) == {}
    assert warnings_of(caplog) == [
        (
            f"ignoring {tmp_path}/footprints.json: it belongs to uid {uid}, not to you, root or the docker group "
            "(measurements are only advice; the next switch rewrites it)"
        )
    ]


def test_no_state_directory_yet_means_no_footprints_and_no_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="modelctl"):
        assert read_footprints(tmp_path / "missing") == {}
    assert warnings_of(caplog) == []


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    record_footprint(tmp_path, "dots-ocr", FP)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(footprints.json, "dump", broken)
    with pytest.raises(OSError):
        record_footprint(tmp_path, "other", FP)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["footprints.json"]
    assert read_footprints(tmp_path) == {"dots-ocr": FP}
