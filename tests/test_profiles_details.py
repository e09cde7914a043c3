"""Profiles and the catalog, word for word: each message as the user reads it (the file, the key,
the value, what to do), each branch of the directory scan, and the catalog's cache edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl import catalog as catalog_module
from modelctl.catalog import Catalog, read_profiles
from modelctl.errors import ProfileError, UnknownProfileError, UsageError
from modelctl.profiles import declared_name, load_profile

VALID = """\
name: demo-a
model: org/model-a
image: vllm/vllm-openai:v0.11.1
vram_gib: 4.2
max_model_len: 4096
max_num_seqs: 4
"""


def write(directory: Path, filename: str, text: str) -> Path:
    path = directory / filename
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> ProfileError:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    return caught.value


def test_a_validation_error_names_the_file_the_key_and_the_readme(tmp_path):
    error = error_of(tmp_path, VALID.replace("vram_gib: 4.2", "vram_gib: lots"))
    assert error.message == f"{tmp_path / 'bad.yaml'}: key 'vram_gib': expected a number, got 'lots'"
    assert error.hint == "see README 'Profiles' for the keys"


def test_every_problem_of_a_file_is_listed_separated_by_semicolons(tmp_path):
    text = VALID.replace("vram_gib: 4.2", "vram_gib: lots").replace("max_num_seqs: 4", "max_num_seqs: many")
    error = error_of(tmp_path, text)
    assert error.message == (
        f"{tmp_path / 'bad.yaml'}: key 'vram_gib': expected a number, got 'lots'; "
        "key 'max_num_seqs': expected a whole number, got 'many'"
    )


def test_a_validator_message_is_shown_without_pydantics_prefix_and_with_the_value(tmp_path):
    error = error_of(tmp_path, VALID.replace("vllm/vllm-openai:v0.11.1", "vllm/vllm-openai"))
    assert error.message.endswith(
        "key 'image': pin a tag, e.g. 'vllm/vllm-openai:v0.11.1' (an unpinned image changes under you) "
        "(got 'vllm/vllm-openai')"
    )


def test_a_bad_name_says_what_a_name_may_hold(tmp_path):
    error = error_of(tmp_path, VALID.replace("name: demo-a", "name: Demo_A"))
    assert error.message.endswith("key 'name': String should match pattern '^[a-z0-9][a-z0-9.-]*$' (got 'Demo_A')"), (
        "the user reads the pattern a name must match and the value given"
    )


def test_a_tier_key_that_is_not_a_number_quotes_the_key_given(tmp_path):
    error = error_of(tmp_path, VALID + "tiers:\n  16GB: {vram_gib: 9.0, max_model_len: 8192, max_num_seqs: 2}\n")
    assert error.message.endswith("key 'tiers.16GB': expected a whole number of GiB as the tier's key, got '16GB'")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("port: 0", "key 'port': Input should be greater than or equal to 1 (got 0)"),
        ("port: 65536", "key 'port': Input should be less than or equal to 65535 (got 65536)"),
        ("vram_gib: 0", "key 'vram_gib': Input should be greater than 0 (got 0)"),
        ("max_model_len: 0", "key 'max_model_len': Input should be greater than 0 (got 0)"),
        ("max_num_seqs: -1", "key 'max_num_seqs': Input should be greater than 0 (got -1)"),
        ("startup_timeout: 0", "key 'startup_timeout': Input should be greater than 0 (got 0)"),
        ("model: ''", "key 'model': String should have at least 1 character (got '')"),
    ],
)
def test_field_bounds(tmp_path, line, message):
    key = line.split(":")[0]
    text = "\n".join(x for x in VALID.splitlines() if not x.startswith(f"{key}:")) + f"\n{line}\n"
    assert error_of(tmp_path, text).message == f"{tmp_path / 'bad.yaml'}: {message}"


def test_the_edges_of_the_bounds_are_accepted(tmp_path):
    for port in (1, 65535):
        path = write(tmp_path, "ok.yaml", VALID + f"port: {port}\n")
        assert load_profile(path).port == port
    path = write(tmp_path, "ok.yaml", VALID.replace("vram_gib: 4.2", "vram_gib: 0.01"))
    assert load_profile(path).vram_gib == 0.01


def test_a_tier_value_of_zero_is_refused(tmp_path):
    error = error_of(tmp_path, VALID + "tiers:\n  16: {vram_gib: 0, max_model_len: 8192, max_num_seqs: 2}\n")
    assert error.message.endswith("key 'tiers.16.vram_gib': Input should be greater than 0 (got 0)")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")])
def test_yaml_that_is_not_a_mapping_is_refused_naming_what_it_is(tmp_path, text, kind):
    error = error_of(tmp_path, text)
    assert error.message == f"{tmp_path / 'bad.yaml'}: expected a mapping of profile keys at the top level, got {kind}"


def test_a_list_file_in_the_directory_is_reported_under_its_file_name(tmp_path):
    write(tmp_path, "bad.yaml", "- a\n- b\n")
    [bad] = read_profiles(tmp_path).invalid
    assert bad.names == frozenset({"bad"})
    assert bad.error.message.endswith("expected a mapping of profile keys at the top level, got list")


def test_the_names_of_an_invalid_file_are_its_stem_and_the_string_name_it_declares(tmp_path):
    write(tmp_path, "one.yaml", VALID.replace("demo-a", "declared") + "vram_gb: 1\n")
    write(tmp_path, "two.yaml", VALID.replace("name: demo-a", "name: 5"))
    loaded = read_profiles(tmp_path)
    assert {bad.path.name: bad.names for bad in loaded.invalid} == {
        "one.yaml": frozenset({"one", "declared"}),
        "two.yaml": frozenset({"two"}),  # 5 is not a name: only the file's stem
    }
    assert declared_name(tmp_path / "one.yaml") == "declared"
    assert declared_name(tmp_path / "two.yaml") is None
    write(tmp_path, "three.yaml", "name: [unclosed\n")
    assert declared_name(tmp_path / "three.yaml") is None


def test_an_invalid_file_first_does_not_stop_the_files_after_it(tmp_path):
    write(tmp_path, "a-typo.yaml", VALID.replace("demo-a", "typo") + "vram_gb: 4\n")
    write(tmp_path, "b.yaml", VALID)
    write(tmp_path, "c.yml", VALID.replace("demo-a", "demo-c"))
    loaded = read_profiles(tmp_path)
    assert list(loaded.profiles) == ["demo-a", "demo-c"]
    assert [bad.path.name for bad in loaded.invalid] == ["a-typo.yaml"]
    assert loaded.directory == tmp_path


def test_a_name_clash_says_what_to_do(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", VALID)
    [bad] = read_profiles(tmp_path).invalid
    assert bad.error.hint == "give each profile a unique name, served_model_name and aliases"


def test_an_unknown_name_lists_the_known_ones_and_says_where_to_look(tmp_path):
    write(tmp_path, "b.yaml", VALID.replace("demo-a", "demo-b"))
    write(tmp_path, "a.yaml", VALID)
    with pytest.raises(UnknownProfileError) as caught:
        read_profiles(tmp_path).find("nope")
    assert caught.value.message == "unknown profile 'nope' (known: demo-a, demo-b)"
    assert caught.value.hint == "see `modelctl list`"


def test_an_unknown_name_in_an_empty_directory_and_beside_two_invalid_files(tmp_path):
    with pytest.raises(UnknownProfileError) as empty:
        read_profiles(tmp_path).find("nope")
    assert empty.value.message == "unknown profile 'nope' (known: none)"
    write(tmp_path, "x.yaml", "- a\n")
    write(tmp_path, "y.yml", "- b\n")
    with pytest.raises(UnknownProfileError) as caught:
        read_profiles(tmp_path).find("nope")
    assert caught.value.message == "unknown profile 'nope' (known: none; skipped as invalid: x.yaml, y.yml)"


def test_a_missing_directory_says_where_to_run_from(tmp_path):
    with pytest.raises(UsageError) as caught:
        read_profiles(tmp_path / "nope")
    assert caught.value.message == f"profiles directory {tmp_path / 'nope'} does not exist"
    assert caught.value.hint == "run from the repository root or set MODELCTL_PROFILES_DIR"


def test_a_profiles_path_that_is_a_file_cannot_be_read(tmp_path):
    path = write(tmp_path, "profiles", "not a directory")
    with pytest.raises(UsageError) as caught:
        read_profiles(path)
    assert caught.value.message == f"cannot read the profiles directory {path}: Not a directory"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_catalog_looks_again_once_max_age_has_passed(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(catalog_module.time, "monotonic", clock)
    write(tmp_path, "a.yaml", VALID)
    catalog = Catalog(tmp_path, max_age_s=10)
    first = catalog.load()
    write(tmp_path, "b.yaml", VALID.replace("demo-a", "demo-b"))
    clock.now = 109.99
    assert catalog.load() is first  # 9.99 s < 10 s: not looked at
    clock.now = 110.0  # 10 s: looked at again
    assert list(catalog.load().profiles) == ["demo-a", "demo-b"]


def test_a_directory_that_cannot_be_fingerprinted_is_read_every_time(tmp_path, monkeypatch):
    write(tmp_path, "a.yaml", VALID)
    monkeypatch.setattr(catalog_module, "_fingerprint", lambda directory: None)
    catalog = Catalog(tmp_path)
    first = catalog.load()
    second = catalog.load()
    assert second is not first and list(second.profiles) == ["demo-a"]


def sleeper_profile(name: str, port: int) -> str:
    return VALID.replace("demo-a", name) + f"sleep_level: 1\nport: {port}\n"


def test_sleep_enabled_profiles_on_one_port_are_all_refused_each_naming_the_others(tmp_path):
    a = write(tmp_path, "a.yaml", sleeper_profile("sleep-a", 8001))
    b = write(tmp_path, "b.yaml", sleeper_profile("sleep-b", 8001))
    c = write(tmp_path, "c.yaml", sleeper_profile("sleep-c", 8001))
    write(tmp_path, "d.yaml", sleeper_profile("sleep-d", 8002))  # alone on its port
    write(tmp_path, "e.yaml", VALID.replace("demo-a", "plain") + "port: 8001\n")  # no sleep mode: may share
    loaded = read_profiles(tmp_path)
    assert list(loaded.profiles) == ["sleep-d", "plain"]
    assert {bad.path: bad.error.message for bad in loaded.invalid} == {
        a: f"{a}: sleep-enabled profiles cannot share port 8001 (a sleeper keeps its port): {b}, {c} uses it too",
        b: f"{b}: sleep-enabled profiles cannot share port 8001 (a sleeper keeps its port): {a}, {c} uses it too",
        c: f"{c}: sleep-enabled profiles cannot share port 8001 (a sleeper keeps its port): {a}, {b} uses it too",
    }
    assert {bad.error.hint for bad in loaded.invalid} == {"give each sleep-enabled profile its own port"}
    assert {bad.path.name: bad.names for bad in loaded.invalid}["a.yaml"] == frozenset({"a", "sleep-a"})
    with pytest.raises(ProfileError, match="cannot share port 8001"):
        loaded.find("sleep-b")


def test_two_sleepers_on_their_own_ports_are_both_kept(tmp_path):
    write(tmp_path, "a.yaml", sleeper_profile("sleep-a", 8001))
    write(tmp_path, "b.yaml", sleeper_profile("sleep-b", 8002))
    loaded = read_profiles(tmp_path)
    assert list(loaded.profiles) == ["sleep-a", "sleep-b"] and loaded.invalid == []


def test_a_pair_of_sleepers_on_one_port_after_a_lone_one_is_refused(tmp_path):
    write(tmp_path, "a.yaml", sleeper_profile("lone", 8001))
    b = write(tmp_path, "b.yaml", sleeper_profile("pair-b", 8002))
    c = write(tmp_path, "c.yaml", sleeper_profile("pair-c", 8002))
    loaded = read_profiles(tmp_path)
    assert list(loaded.profiles) == ["lone"]
    assert [bad.error.message for bad in loaded.invalid] == [
        f"{b}: sleep-enabled profiles cannot share port 8002 (a sleeper keeps its port): {c} uses it too",
        f"{c}: sleep-enabled profiles cannot share port 8002 (a sleeper keeps its port): {b} uses it too",
    ]
