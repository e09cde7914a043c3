"""A credential written into a profile (env or vllm_args) is never shown by `show`, `list --json`
or `GET /api/profiles`: names stay, values are masked."""

from __future__ import annotations

from modelctl.gpu import GpuBudget
from modelctl.plan import make_plan
from modelctl.profiles import Profile
from modelctl.report import plan_json
from modelctl.settings import Settings

TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
KEY = "sk-proj-Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp"


def test_plan_documents_mask_credentials_and_keep_names():
    profile = Profile(
        name="demo-a",
        model="org/model-a",
        image="vllm/vllm-openai:v0.33.0",
        vram_gib=4.0,
        max_model_len=4096,
        max_num_seqs=2,
        env={"HF_TOKEN": TOKEN, "VLLM_USE_V1": "1", "MY_SETTING": TOKEN},
        vllm_args=["--api-key", KEY, "--enforce-eager"],
    )
    plan = make_plan(profile, GpuBudget(total_gib=12.0, source="test"), Settings(gpus="none"))
    document = plan_json(plan)
    assert document["env"] == {"HF_TOKEN": "***", "VLLM_USE_V1": "1", "MY_SETTING": "***"}
    assert document["command"][-3:] == ["--api-key", "***", "--enforce-eager"]
    assert TOKEN not in str(document) and KEY not in str(document)
    assert "-e 'HF_TOKEN=***'" in document["docker_run"] and "-e VLLM_USE_V1=1" in document["docker_run"]
    assert plan.spec.env["HF_TOKEN"] == TOKEN, "the container itself still gets the value"
