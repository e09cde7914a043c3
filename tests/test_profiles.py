"""Profile loading: every error names the file, the key and what is expected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelctl.catalog import Catalog, read_profiles
from modelctl.errors import DoesNotFitError, ProfileError, UnknownProfileError, UsageError
from modelctl.gpu import GpuBudget
from modelctl.plan import check_fits, make_plan
from modelctl.settings import Settings

REPO = Path(__file__).resolve().parent.parent

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


def load_error(tmp_path: Path, text: str) -> str:
    """The error of an invalid file: reported by the catalog, raised when it is asked for."""
    path = write(tmp_path, "bad.yaml", text)
    loaded = read_profiles(tmp_path)
    assert loaded.profiles == {} and [bad.path for bad in loaded.invalid] == [path]
    with pytest.raises(ProfileError) as caught:
        loaded.find("bad")
    message = str(caught.value)
    assert str(path) in message, "the error must name the file"
    assert caught.value.exit_code == 2
    return message


def test_valid_profile_gets_defaults(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    profile = read_profiles(tmp_path).profiles["demo-a"]
    assert profile.port == 8000
    assert profile.served_name == "demo-a"
    assert profile.vllm_args == [] and profile.env == {}


def test_unknown_key_is_named(tmp_path):
    message = load_error(tmp_path, VALID + "vram_gb: 4\n")
    assert "unknown key 'vram_gb'" in message and "vram_gib" in message


def test_wrong_type_names_key_and_expectation(tmp_path):
    message = load_error(tmp_path, VALID.replace("vram_gib: 4.2", "vram_gib: lots"))
    assert "key 'vram_gib': expected a number, got 'lots'" in message


def test_env_values_must_be_strings(tmp_path):
    message = load_error(tmp_path, VALID + "env:\n  VLLM_LOGGING_LEVEL: 1\n")
    assert "env.VLLM_LOGGING_LEVEL" in message and "quote it" in message


def test_bad_name(tmp_path):
    message = load_error(tmp_path, VALID.replace("name: demo-a", "name: Demo_A"))
    assert "key 'name'" in message


def test_missing_required_key(tmp_path):
    message = load_error(tmp_path, VALID.replace("max_num_seqs: 4\n", ""))
    assert "missing required key 'max_num_seqs'" in message


def test_duplicate_name_names_both_files_and_keeps_the_first(tmp_path):
    first = write(tmp_path, "a.yaml", VALID)
    second = write(tmp_path, "b.yaml", VALID)
    loaded = read_profiles(tmp_path)
    assert list(loaded.profiles) == ["demo-a"]
    [bad] = loaded.invalid
    assert bad.path == second
    assert bad.error.message == f"{second}: name 'demo-a' is already used by {first}"


def test_alias_clash_with_another_profile(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    clash = write(tmp_path, "b.yaml", VALID.replace("demo-a", "demo-b") + "aliases: [demo-a]\n")
    loaded = read_profiles(tmp_path)
    assert list(loaded.profiles) == ["demo-a"]
    assert loaded.warnings() == [
        f"skipped invalid profile {clash}: name 'demo-a' is already used by {tmp_path / 'a.yaml'}"
    ]
    with pytest.raises(ProfileError, match="'demo-a' is already used"):
        loaded.find("demo-b")  # the name it declares leads to its error, not to "unknown"


def test_managed_flag_in_vllm_args_is_refused(tmp_path):
    message = load_error(tmp_path, VALID + "vllm_args: ['--gpu-memory-utilization=0.9']\n")
    assert "--gpu-memory-utilization is set by modelctl" in message


def test_unpinned_image_is_refused(tmp_path):
    message = load_error(tmp_path, VALID.replace("vllm/vllm-openai:v0.11.1", "vllm/vllm-openai"))
    assert "key 'image'" in message and "pin a tag" in message


def test_yaml_syntax_error(tmp_path):
    message = load_error(tmp_path, "name: [unclosed\n")
    assert "not valid YAML" in message


def test_missing_directory(tmp_path):
    with pytest.raises(UsageError, match="MODELCTL_PROFILES_DIR"):
        Catalog(tmp_path / "nope").load()


def test_find_by_alias_and_served_name(tmp_path):
    write(tmp_path, "a.yaml", VALID + "served_model_name: org/model-a\naliases: [a]\n")
    profiles = Catalog(tmp_path)
    assert profiles.find("a").name == "demo-a"
    assert profiles.find("org/model-a").name == "demo-a"
    with pytest.raises(UnknownProfileError, match="known: demo-a"):
        profiles.find("demo-b")


def test_shipped_profiles_load_and_fit_a_12_gib_card():
    loaded = read_profiles(REPO / "profiles")
    assert loaded.invalid == []
    profiles = loaded.profiles
    assert {"dots-ocr", "deepseek-ocr", "qwen3-vl-2b", "qwen2-vl-2b"} <= set(profiles)
    for total in (11.99, 15.99, 23.99):
        gpu = GpuBudget(total_gib=total, source="test")
        for profile in profiles.values():
            check_fits(make_plan(profile, gpu, Settings(gpus="none")), [])
            assert profile.port == 8000, "the shipped profiles share one URL"
            assert {12, 16, 24} <= set(profile.tiers), f"{profile.name}: tiers for 12, 16 and 24 GiB cards"


def test_tier_keys_and_values_are_checked(tmp_path):
    message = load_error(tmp_path, VALID + "tiers:\n  16: {vram_gib: 9.0, max_model_len: 8192}\n")
    assert "tiers.16.max_num_seqs" in message
    message = load_error(tmp_path, VALID + "tiers:\n  16GB: {vram_gib: 9.0, max_model_len: 8192, max_num_seqs: 2}\n")
    assert "key 'tiers.16GB'" in message


def test_hidden_and_non_regular_files_are_skipped(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, ".#a.yaml", "this is an editor lock file, not YAML: [")
    (tmp_path / "dir.yaml").mkdir()
    os.mkfifo(tmp_path / "fifo.yaml")  # opening it would block for ever
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "nowhere.yaml")
    write(tmp_path, "b.yml", VALID.replace("demo-a", "demo-b"))
    write(tmp_path, "notes.txt", "not a profile")
    loaded = read_profiles(tmp_path)
    assert list(loaded.profiles) == ["demo-a", "demo-b"]
    assert loaded.invalid == []


def test_one_invalid_file_leaves_the_others_usable(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    bad = write(tmp_path, "typo.yaml", VALID.replace("demo-a", "typo") + "vram_gb: 4\n")
    loaded = read_profiles(tmp_path)
    assert list(loaded.profiles) == ["demo-a"]
    assert loaded.find("demo-a").model == "org/model-a"
    assert loaded.warnings() == [
        f"skipped invalid profile {bad}: unknown key 'vram_gb' (allowed keys: name, model, image, vram_gib, "
        "max_model_len, max_num_seqs, vllm_args, env, port, served_model_name, aliases, startup_timeout, "
        "idle_ttl, tiers, sleep_level, sleep_vram_gib)"
    ]
    with pytest.raises(ProfileError) as caught:
        loaded.find("typo")  # by the name it declares
    assert caught.value.exit_code == 2
    with pytest.raises(UnknownProfileError) as unknown:
        loaded.find("nope")
    assert unknown.value.message == "unknown profile 'nope' (known: demo-a; skipped as invalid: typo.yaml)"


def test_the_catalog_reads_again_only_when_a_file_changes(tmp_path):
    path = write(tmp_path, "a.yaml", VALID)
    catalog = Catalog(tmp_path)
    first = catalog.load()
    assert catalog.load() is first  # nothing changed: the same snapshot, nothing parsed again
    path.write_text(VALID.replace("max_num_seqs: 4", "max_num_seqs: 8") + "\n")  # another size
    assert catalog.load().profiles["demo-a"].max_num_seqs == 8
    write(tmp_path, "b.yaml", VALID.replace("demo-a", "demo-b"))
    assert list(catalog.load().profiles) == ["demo-a", "demo-b"]
    (tmp_path / "b.yaml").unlink()
    assert list(catalog.load().profiles) == ["demo-a"]


def test_the_catalog_looks_at_most_once_per_max_age(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    catalog = Catalog(tmp_path, max_age_s=3600)
    first = catalog.load()
    write(tmp_path, "b.yaml", VALID.replace("demo-a", "demo-b"))
    assert catalog.load() is first  # within max_age: the directory is not even listed


def test_plans_for_every_profile_and_one_refused_with_what_fits(tmp_path):
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", VALID.replace("demo-a", "big").replace("vram_gib: 4.2", "vram_gib: 11.5"))
    catalog = Catalog(tmp_path)
    gpu = GpuBudget(total_gib=12.0, source="test")
    settings = Settings(gpus="none")
    assert [(p.profile.name, p.utilization, p.fits) for p in catalog.plans(gpu, settings)] == [
        ("demo-a", 0.35, True),
        ("big", 0.96, False),
    ]
    assert catalog.plan("demo-a", gpu, settings).utilization == 0.35
    with pytest.raises(DoesNotFitError) as caught:
        catalog.plan("big", gpu, settings)
    assert caught.value.hint.startswith("fits this GPU: demo-a (4.2 GiB);")


def test_yaml_aliases_and_huge_files_are_refused(tmp_path):
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n'
    message = load_error(tmp_path, bomb)
    assert "anchor" in message or "alias" in message
    (tmp_path / "bad.yaml").unlink()
    message = load_error(tmp_path, VALID + "# " + "x" * (1 << 20) + "\n")
    assert "1048576-byte limit" in message
