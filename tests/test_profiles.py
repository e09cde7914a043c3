"""Profile loading: every error names the file, the key and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.catalog import Catalog, read_profiles
from modelctl.errors import ProfileError, UnknownProfileError, UsageError
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
