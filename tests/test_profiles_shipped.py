"""The shipped profiles against the vLLM their image pins: every flag they pass, theirs and
modelctl's, is in that version's flag list (modelctl/standin/flags-<version>.txt, generated from
the release's source); each file says where its tag and its figures come from."""

from __future__ import annotations

import pytest
from conftest import REPO

from modelctl.catalog import read_profiles
from modelctl.gpu import GpuBudget
from modelctl.plan import make_plan
from modelctl.settings import Settings
from modelctl.vllm.flags import image_version, known_flags, unknown_flags, version_text

PROFILES = REPO / "profiles"
SHIPPED = read_profiles(PROFILES).profiles
# The architecture each shipped model registers, and its line in vLLM 0.33.0's
# vllm/model_executor/models/registry.py (REPORT of issue 11, section 9).
REGISTRY_LINES = {
    "dots-ocr": ("DotsOCRForCausalLM", 396),
    "deepseek-ocr": ("DeepseekOCRForCausalLM", 381),
    "qwen3-vl-2b": ("Qwen3VLForConditionalGeneration", 612),
    "qwen2-vl-2b": ("Qwen2VLForConditionalGeneration", 586),
}


def test_every_shipped_profile_is_checked():
    assert set(SHIPPED) == set(REGISTRY_LINES)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_vllm_args_are_flags_of_the_pinned_version(name):
    profile = SHIPPED[name]
    version = image_version(profile.image)
    assert version is not None, f"{name}: pin a vllm/vllm-openai:vX.Y.Z tag, not {profile.image}"
    known = known_flags(version)
    assert known is not None, f"{name}: no flag list for vLLM {version_text(version)} (scripts/vllm-flags.py)"
    assert unknown_flags(profile.vllm_args, known) == []


@pytest.mark.parametrize("name", sorted(SHIPPED))
@pytest.mark.parametrize("total", [11.99, 15.99, 23.99])
def test_the_whole_command_line_is_accepted_by_the_pinned_version(name, total):
    profile = SHIPPED[name]
    known = known_flags(image_version(profile.image))
    plan = make_plan(profile, GpuBudget(total_gib=total, source="test"), Settings(gpus="none", stop_grace=10))
    assert unknown_flags(plan.spec.command, known) == []


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_same_profile_pinned_to_0_11_1_gets_no_flag_0_11_lacks(name):
    profile = SHIPPED[name].model_copy(update={"image": "vllm/vllm-openai:v0.11.1"})
    plan = make_plan(profile, GpuBudget(total_gib=11.99, source="test"), Settings(gpus="none", stop_grace=10))
    assert unknown_flags(plan.spec.command, known_flags((0, 11, 1))) == []
    assert "--shutdown-timeout" not in plan.spec.command


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_file_cites_its_evidence_and_says_what_is_measured(name):
    text = (PROFILES / f"{name}.yaml").read_text()
    arch, line = REGISTRY_LINES[name]
    assert SHIPPED[name].image == "vllm/vllm-openai:v0.33.0"
    assert f"{arch} is registered: vllm/model_executor/models/registry.py:{line}" in text
    assert "#32714" in text, "the known sleep-mode regression of 0.14"
    assert "MEASURED: none" in text and "COMPUTED" in text and "ESTIMATE" in text
    assert "INSIDE the budget on 0.33" in text, "CUDA graphs count in the budget since v0.21"
