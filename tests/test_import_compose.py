"""`modelctl import-compose`: a hand-written compose file in, one valid profile per vLLM service out.

The compose file below is written the way users write theirs: a YAML anchor for the common
parts, a folded `command`, a `bash -c` script, the long `ports` syntax, tokens in the environment,
and services that are not vLLM servers at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelctl.catalog import read_profiles
from modelctl.compose_import import import_compose, parse_dotenv, profile_name, render_profile
from modelctl.profiles import load_profile

REPO = Path(__file__).resolve().parent.parent
HF_SECRET = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"

USERS_COMPOSE = f"""\
# OCR models for the document pipeline. Only ONE may run at a time: 12 GB RTX 5070 Ti!
x-vllm-common: &vllm-common
  restart: unless-stopped
  ipc: host
  volumes:
    - ~/.cache/huggingface:/root/.cache/huggingface
  deploy:
    resources:
      reservations:
        devices:
          - driver: nvidia
            count: all
            capabilities: [gpu]

services:
  vllm-dots-ocr:
    <<: *vllm-common
    image: vllm/vllm-openai:v0.11.0
    container_name: vllm-dots-ocr
    ports:
      - "8000:8000"
    environment:
      - HF_TOKEN=${{HF_TOKEN}}
      - VLLM_USE_V1=1
    command: >
      --model rednote-hilab/dots.ocr
      --trust-remote-code
      --served-model-name dots.ocr
      --gpu-memory-utilization 0.40
      --max-model-len 1024
      --max-num-seqs 1
      --dtype bfloat16
      --enforce-eager
      --chat-template-content-format string
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:8000/health"]
      interval: 30s

  vllm-qwen3-vl:
    <<: *vllm-common
    image: vllm/vllm-openai:v0.11.1
    ports:
      - "127.0.0.1:8001:8000"
    environment:
      HUGGING_FACE_HUB_TOKEN: {HF_SECRET}
      VLLM_WORKER_MULTIPROC_METHOD: spawn
      OMP_NUM_THREADS: 4
    entrypoint: ["/bin/bash", "-c"]
    command:
      - "pip install -q qwen-vl-utils && vllm serve Qwen/Qwen3-VL-2B-Instruct
        --max-model-len 8192 --max-num-seqs 4 --gpu-memory-utilization 0.37
        --limit-mm-per-prompt.video 0 --port 8000 --host 0.0.0.0"
    networks: [ocr]

  deepseek_ocr:
    image: vllm/vllm-openai:v0.11.1
    runtime: nvidia
    shm_size: 16gb
    ports:
      - target: 8000
        published: 8002
    volumes:
      - hf-cache:/root/.cache/huggingface
      - ./templates:/templates:ro
    environment:
      - NVIDIA_VISIBLE_DEVICES=all
      - CUDA_VISIBLE_DEVICES=0
    command:
      - --model
      - deepseek-ai/DeepSeek-OCR
      - --logits-processors
      - vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor
      - --no-enable-prefix-caching
      - --mm-processor-cache-gb
      - "0"
      - --max-model-len=8192
      - --max-num-seqs
      - many
      - --gpu-memory-utilization=0.7
      - --chat-template
      - /templates/deepseek.jinja

  redis:
    image: redis:7-alpine
    ports: ["6379:6379"]
    command: redis-server --appendonly yes --requirepass ${{REDIS_PASSWORD}}

  pipeline:
    build: ./pipeline
    depends_on: [redis, vllm-dots-ocr]
    environment:
      OPENAI_BASE_URL: http://vllm-dots-ocr:8000/v1

networks:
  ocr: {{}}
volumes:
  hf-cache: {{}}
"""


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "MODELCTL_GPU_TOTAL_GIB": "12",
        "HF_TOKEN": HF_SECRET,  # set in the shell, as users have it: must not reach a profile either
    }
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def compose_file(tmp_path: Path) -> Path:
    path = tmp_path / "ocr" / "docker-compose.yml"
    path.parent.mkdir()
    path.write_text(USERS_COMPOSE)
    return path


def test_three_vllm_services_give_three_valid_profiles(compose_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    done = cli("import-compose", str(compose_file), "--out", str(out), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)

    assert sorted(p.name for p in out.iterdir()) == ["deepseek-ocr.yaml", "dots-ocr.yaml", "qwen3-vl.yaml"]
    loaded = read_profiles(out)  # all of them together, as `modelctl list` reads them
    assert loaded.invalid == []
    profiles = loaded.profiles
    assert set(profiles) == {"dots-ocr", "qwen3-vl", "deepseek-ocr"}
    assert report["ignored"] == ["redis", "pipeline"]
    assert {w["service"]: w["profile"] for w in report["written"]} == {
        "vllm-dots-ocr": "dots-ocr",
        "vllm-qwen3-vl": "qwen3-vl",
        "deepseek_ocr": "deepseek-ocr",
    }

    dots = profiles["dots-ocr"]
    assert (dots.model, dots.image, dots.port) == ("rednote-hilab/dots.ocr", "vllm/vllm-openai:v0.11.0", 8000)
    assert (dots.max_model_len, dots.max_num_seqs, dots.vram_gib) == (1024, 1, 4.8)  # 0.40 x 12 GiB
    assert dots.served_model_name == "dots.ocr"  # clients keep the name they use today
    assert dots.vllm_args == [
        "--trust-remote-code",
        "--dtype",
        "bfloat16",
        "--enforce-eager",
        "--chat-template-content-format",
        "string",
    ]
    assert dots.env == {"VLLM_USE_V1": "1"}

    qwen = profiles["qwen3-vl"]  # `bash -c` with a command string: the vllm serve step, positional model
    assert (qwen.model, qwen.port, qwen.max_model_len, qwen.max_num_seqs) == (
        "Qwen/Qwen3-VL-2B-Instruct",
        8001,
        8192,
        4,
    )
    assert qwen.vram_gib == 4.4  # 0.37 x 12 = 4.44, rounded down: the plan never asks for more
    assert qwen.served_model_name == "Qwen/Qwen3-VL-2B-Instruct"  # vLLM's default served name
    assert qwen.vllm_args == ["--limit-mm-per-prompt.video", "0"]  # --port and --host are modelctl's
    assert qwen.env == {"VLLM_WORKER_MULTIPROC_METHOD": "spawn", "OMP_NUM_THREADS": "4"}

    deepseek = profiles["deepseek-ocr"]  # list command, --flag=value forms, long ports syntax
    assert (deepseek.model, deepseek.port, deepseek.max_model_len) == ("deepseek-ai/DeepSeek-OCR", 8002, 8192)
    assert deepseek.vram_gib == 8.4
    assert deepseek.max_num_seqs == 2  # "many" is not a number: the assumed default, reported
    assert deepseek.vllm_args[:5] == [
        "--logits-processors",
        "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor",
        "--no-enable-prefix-caching",
        "--mm-processor-cache-gb",
        "0",
    ]
    assert deepseek.env == {"CUDA_VISIBLE_DEVICES": "0"}

    for path in out.iterdir():
        text = path.read_text()
        assert text.startswith(f"# Imported by `modelctl import-compose` from {compose_file}")
        assert "ESTIMATE" in text and "assumed GPU total" in text
        assert HF_SECRET not in text and "HF_TOKEN=" not in text
        assert load_profile(path).name == path.stem


def test_what_could_not_be_carried_over_is_reported(compose_file: Path, tmp_path: Path) -> None:
    done = cli("import-compose", str(compose_file), "--out", str(tmp_path / "p"), "--json")
    assert done.returncode == 0, done.stderr
    dropped = {(d["service"], d["what"]): d["why"] for d in json.loads(done.stdout)["dropped"]}

    def has(service: str, what: str, why: str = "") -> bool:
        return any(s == service and w.startswith(what) and why in reason for (s, w), reason in dropped.items())

    assert has("vllm-dots-ocr", "environment HF_TOKEN", "secret")
    assert has("vllm-dots-ocr", "deploy", "MODELCTL_GPUS")
    assert has("vllm-dots-ocr", "healthcheck")
    assert has("vllm-dots-ocr", "volumes ~/.cache/huggingface", "MODELCTL_HF_CACHE")
    assert has("vllm-qwen3-vl", "environment HUGGING_FACE_HUB_TOKEN", "secret")
    assert has("vllm-qwen3-vl", "networks")
    assert has("vllm-qwen3-vl", "shell step 'pip install -q qwen-vl-utils'")
    assert has("vllm-qwen3-vl", "--host")
    assert has("deepseek_ocr", "--max-num-seqs many", "not a whole number")
    assert has("deepseek_ocr", "volumes ./templates:/templates:ro")
    assert has("deepseek_ocr", "vllm_args /templates/deepseek.jinja", "not carried over")
    assert has("deepseek_ocr", "environment NVIDIA_VISIBLE_DEVICES")
    assert has("deepseek_ocr", "runtime")
    assert not any(s in ("redis", "pipeline") for s, _ in dropped)  # ignored services are not reported on

    text = cli("import-compose", str(compose_file), "--out", str(tmp_path / "q")).stdout
    assert "not carried over: healthcheck" in text
    assert "ignored (not vLLM servers): redis, pipeline" in text
    assert HF_SECRET not in text


def test_an_existing_profile_is_never_overwritten_without_force(compose_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    out.mkdir()
    mine = out / "qwen3-vl.yaml"
    mine.write_text(
        "# tuned by hand\n"
        + yaml.safe_dump(
            {
                "name": "qwen3-vl",
                "model": "Qwen/Qwen3-VL-2B-Instruct",
                "image": "vllm/vllm-openai:v0.11.1",
                "vram_gib": 7.4,
                "max_model_len": 8192,
                "max_num_seqs": 2,
            }
        )
    )
    before = mine.read_text()

    done = cli("import-compose", str(compose_file), "--out", str(out))
    assert done.returncode == 2
    assert str(mine) in done.stderr and "--force" in done.stderr
    assert mine.read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["qwen3-vl.yaml"]  # all or nothing

    done = cli("import-compose", str(compose_file), "--out", str(out), "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == 2

    done = cli("import-compose", str(compose_file), "--out", str(out), "--force")
    assert done.returncode == 0, done.stderr
    assert mine.read_text() != before and load_profile(mine).max_num_seqs == 4
    assert len(read_profiles(out).profiles) == 3


def test_a_name_another_profile_claims_is_refused(compose_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "profiles"
    out.mkdir()
    (out / "dots.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "dots",
                "model": "rednote-hilab/dots.ocr",
                "image": "vllm/vllm-openai:v0.11.1",
                "vram_gib": 8.5,
                "max_model_len": 12288,
                "max_num_seqs": 2,
                "aliases": ["dots.ocr"],
            }
        )
    )
    done = cli("import-compose", str(compose_file), "--out", str(out))
    assert done.returncode == 2
    assert "'dots.ocr' is already used by" in done.stderr and "dots.yaml" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["dots.yaml"]


def test_a_file_without_vllm_services_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text("services:\n  redis:\n    image: redis:7\n")
    done = cli("import-compose", str(path), "--out", str(tmp_path / "p"))
    assert done.returncode == 2
    assert "no vLLM service" in done.stderr
    assert cli("import-compose", str(tmp_path / "missing.yml")).returncode == 2


# --- the parts, without files --------------------------------------------------------------------


def one(compose: str, **kwargs):
    result = import_compose(compose, gpu_total_gib=kwargs.pop("gpu_total_gib", 12), **kwargs)
    assert len(result.imported) == 1, (result.skipped, result.ignored)
    return result.imported[0], result


@pytest.mark.parametrize(
    ("service", "name"),
    [
        ("vllm-dots-ocr", "dots-ocr"),
        ("vllm_qwen3_vl", "qwen3-vl"),
        ("Qwen2-VL_vllm", "qwen2-vl"),
        ("vllm", "vllm"),
        ("dots.ocr", "dots.ocr"),
        ("__OCR__", "ocr"),
    ],
)
def test_profile_names_from_service_names(service: str, name: str) -> None:
    assert profile_name(service) == name


def test_vllm_services_are_found_by_image_or_command() -> None:
    result = import_compose(
        """
services:
  by-image: {image: "docker.io/vllm/vllm-openai:v0.11.1", command: "--model m1"}
  by-serve: {image: "my/cuda:12", command: "vllm serve m2 --max-model-len 4k"}
  by-module: {image: "my/cuda:12", command: ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m3"]}
  other: {image: "my/cuda:12", command: "python3 app.py --model m4"}
""",
        gpu_total_gib=16,
    )
    found = [(i.service, i.profile.model) for i in result.imported]
    assert found == [("by-image", "m1"), ("by-serve", "m2"), ("by-module", "m3")]
    assert result.ignored == ["other"]
    assert result.imported[1].profile.max_model_len == 4000  # vLLM's 4k; 4K would be 4096
    # No utilization in the file: vLLM's default 0.9 of the assumed 16 GiB, said to be an estimate.
    assert result.imported[0].profile.vram_gib == 14.4
    assert any("vLLM 0.11.1's default utilization 0.9 " in a for a in result.imported[0].assumptions)


def test_defaults_are_assumed_and_said() -> None:
    item, _ = one("services:\n  m:\n    image: vllm/vllm-openai\n    command: --model org/m\n")
    assert (item.profile.max_model_len, item.profile.max_num_seqs, item.profile.port) == (8192, 2, 8000)
    assert item.profile.image == "vllm/vllm-openai:latest"
    said = " ".join(item.assumptions)
    assert "--max-model-len not set" in said and "--max-num-seqs not set" in said
    assert "pin the version" in said and "no published port" in said


def test_environment_forms_and_secrets() -> None:
    item, result = one("""
services:
  m:
    image: vllm/vllm-openai:v0.11.1
    command: --model org/m
    environment:
      VLLM_LOGGING_LEVEL: DEBUG
      VLLM_ALLOW_LONG_MAX_MODEL_LEN: true
      WANDB_API_KEY: abc
      SOME_VALUE: sk-proj-abcdefghijklmnopqrstuvwxyz
      FROM_SHELL:
""")
    assert item.profile.env == {"VLLM_LOGGING_LEVEL": "DEBUG", "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "true"}
    whats = [d.what for d in result.dropped]
    assert "environment WANDB_API_KEY" in whats and "environment SOME_VALUE" in whats
    assert "environment FROM_SHELL" in whats
    assert "sk-proj" not in render_profile(item, result)


@pytest.mark.parametrize(
    ("ports", "port"),
    [
        ('["8080:8000"]', 8080),
        ('["0.0.0.0:8081:8000/tcp"]', 8081),
        ('["9000:9000", "8082:8000"]', 8082),
        ("[{target: 8000, published: '8083', host_ip: 127.0.0.1}]", 8083),
        ('["8000"]', 8000),
    ],
)
def test_the_host_side_of_vllms_port(ports: str, port: int) -> None:
    item, _ = one(
        f"services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model org/m\n    ports: {ports}\n"
    )
    assert item.profile.port == port


def test_variables_resolve_as_compose_would() -> None:
    compose = (
        "services:\n  m:\n    image: vllm/vllm-openai:${VLLM_TAG:-v0.11.1}\n"
        "    command: --model ${MODEL} --max-model-len ${LEN:-2048} --chat-template-content-format $${X}\n"
    )
    item, result = one(compose, variables=parse_dotenv("# the .env\nMODEL='org/m'\nexport LEN=4096  # tuned\n"))
    assert (item.profile.image, item.profile.model, item.profile.max_model_len) == (
        "vllm/vllm-openai:v0.11.1",
        "org/m",
        4096,
    )
    assert item.profile.vllm_args == ["--chat-template-content-format", "${X}"]
    assert not result.dropped

    _, result = one(compose.replace("${MODEL}", "org/${MISSING}"))
    assert any(d.what == "${MISSING} in command" for d in result.dropped)


def test_credentials_in_flags_never_reach_a_profile() -> None:
    item, result = one(
        "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n"
        "    command: --model org/m --api-key ${VLLM_API_KEY} --hf-token="
        + HF_SECRET
        + " --max-num-batched-tokens 8192"
        " --tokenizer org/tok --served-model-name m\n    environment: [MAX_TOKENS=512]\n",
        variables={"VLLM_API_KEY": "sk-local-0123456789abcdef"},
    )
    assert item.profile.vllm_args == ["--max-num-batched-tokens", "8192", "--tokenizer", "org/tok"]
    assert item.profile.env == {"MAX_TOKENS": "512"}
    assert {d.what for d in result.dropped} >= {"--api-key", "--hf-token"}
    text = render_profile(item, result)
    assert "sk-local" not in text and HF_SECRET not in text

    # Nor into the report of a shell step that was left out.
    _, result = one(
        "services:\n  m:\n    image: my/cuda:12\n    entrypoint: [sh, -c]\n"
        f"    command: ['huggingface-cli login --token {HF_SECRET} && HF_TOKEN=x2 VLLM_USE_V1=1 exec vllm serve org/m']\n"
    )
    steps = [d.what for d in result.dropped if d.what.startswith("shell step")]
    assert steps == ["shell step 'huggingface-cli login --token ***'"]
    assert result.imported[0].profile.env == {"VLLM_USE_V1": "1"}  # set on the command line
    assert "environment HF_TOKEN" in [d.what for d in result.dropped]


def test_served_model_names_become_served_name_and_aliases() -> None:
    item, _ = one(
        "services:\n  vllm-m:\n    image: vllm/vllm-openai:v0.11.1\n"
        "    command: vllm serve org/M --served-model-name m-fast m-ocr m\n"
    )
    assert item.profile.name == "m"
    assert item.profile.served_model_name == "m-fast"
    assert item.profile.aliases == ["m-ocr"]  # "m" is the profile's name already


@pytest.mark.parametrize(
    ("image", "vram_gib", "said"),
    [
        ("vllm/vllm-openai:v0.33.0", 11.0, "vLLM 0.33.0's default utilization 0.92 "),  # 0.92 x 12 = 11.04
        ("vllm/vllm-openai:v0.40.2", 11.0, "vLLM 0.40.2's default utilization 0.92 "),
        ("vllm/vllm-openai:v0.11.1", 10.8, "vLLM 0.11.1's default utilization 0.9 "),  # 0.9 x 12 = 10.8
        ("vllm/vllm-openai:v0.20.0", 10.8, "vLLM 0.20.0's default utilization 0.9 "),  # before 0.33: the lower
        ("vllm/vllm-openai:latest", 10.8, "vLLM's default utilization 0.9 "),  # unknown version: the lower
        ("my/vllm:0.33.0", 10.8, "vLLM's default utilization 0.9 "),  # not vLLM's image: its tag says nothing
    ],
)
def test_the_default_utilization_follows_the_image_version(image, vram_gib, said) -> None:
    item, _ = one(f"services:\n  m:\n    image: {image}\n    command: vllm serve org/m\n")
    assert item.profile.vram_gib == vram_gib
    assert any(said in line for line in item.assumptions), item.assumptions


def test_flags_the_image_version_no_longer_has_are_reported() -> None:
    compose = (
        "services:\n  m:\n    image: vllm/vllm-openai:{tag}\n"
        "    command: vllm serve org/m --swap-space 4 --enable-prefix-caching --gpu-mem 0.5 --shutdown-timeout 5\n"
    )
    item, _ = one(compose.format(tag="v0.33.0"))
    said = [line for line in item.assumptions if "is not a flag of" in line]
    # --swap-space is gone by 0.33; a prefix argparse takes (--gpu-mem) is no problem
    assert len(said) == 1 and said[0].startswith("--swap-space is not a flag of vLLM 0.33.0: kept as written"), said
    assert "exits 2" in said[0]
    assert item.profile.vllm_args[:3] == ["--swap-space", "4", "--enable-prefix-caching"]

    item, _ = one(compose.format(tag="v0.11.1"))
    said = [line for line in item.assumptions if "is not a flag of" in line]
    assert [line.split()[0] for line in said] == ["--shutdown-timeout"]  # 0.33's, not 0.11's

    item, _ = one(compose.format(tag="v0.40.0"))  # newer than any list: checked against the newest
    said = [line for line in item.assumptions if "is not a flag of" in line]
    assert [line.split()[0] for line in said] == ["--swap-space"]
    assert "the newest release modelctl knows; the image is 0.40.0" in said[0]

    item, _ = one(compose.format(tag="latest"))
    assert any(
        line.startswith("flags not checked: modelctl has no flag list for the image") for line in item.assumptions
    )
    item, _ = one(compose.format(tag="v0.20.0"))  # between two lists: not guessed
    assert any("no flag list for vLLM 0.20.0 (it knows 0.11.1, 0.33.0)" in line for line in item.assumptions)


def test_a_kept_vllm_cache_points_to_modelctl_vllm_cache() -> None:
    _, result = one(
        "services:\n  m:\n    image: vllm/vllm-openai:v0.33.0\n    command: vllm serve org/m\n"
        "    volumes:\n      - vllm-cache:/root/.cache/vllm\n      - ./data:/data\n"
    )
    why = {d.what: d.why for d in result.dropped}
    assert "set MODELCTL_VLLM_CACHE=vllm-cache" in why["volumes vllm-cache:/root/.cache/vllm"]
    assert "MODELCTL_VLLM_CACHE at /root/.cache/vllm" in why["volumes ./data:/data"]
