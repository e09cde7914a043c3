"""Settings refused before anything runs: each names the variable and what is expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.errors import UsageError
from modelctl.settings import load_settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [("~/hf", Path.home() / "hf"), ("modelctl-hf-cache", Path("modelctl-hf-cache")), ("/srv/hf", Path("/srv/hf"))],
)
def test_hf_cache_home_is_expanded_and_a_volume_name_kept(monkeypatch, value, expected):
    monkeypatch.setenv("MODELCTL_HF_CACHE", value)
    assert load_settings().hf_cache == expected


def test_a_relative_hf_cache_path_is_refused(monkeypatch):
    monkeypatch.setenv("MODELCTL_HF_CACHE", "cache/hf")
    with pytest.raises(UsageError) as caught:
        load_settings()
    assert caught.value.exit_code == 2
    assert caught.value.message == (
        "invalid setting: MODELCTL_HF_CACHE: Value error, expected an absolute directory or a Docker volume name, "
        "got the relative path 'cache/hf'"
    )


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-12"])
def test_an_assumed_gpu_size_must_be_a_finite_positive_number(monkeypatch, value):
    monkeypatch.setenv("MODELCTL_GPU_TOTAL_GIB", value)
    with pytest.raises(UsageError, match="MODELCTL_GPU_TOTAL_GIB"):
        load_settings()
