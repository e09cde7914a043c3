"""What looks like a credential, by name or by value, and how it is masked."""

from __future__ import annotations

import pytest

from modelctl.secrets import is_secret_name, is_secret_value, mask_env, redact, redact_words

HF = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "WANDB_API_KEY",
        "--api-key",
        "--hf-token",
        "DB_PASSWORD",
        "REDIS_PASS",
        "AWS_SECRET_ACCESS_KEY",
        "OPENAI_KEY",
        "MODELCTL_API_TOKEN",
        "GOOGLE_CREDENTIALS",
        "auth",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "MAX_TOKENS",
        "--tokenizer",
        "--max-num-batched-tokens",
        "VLLM_USE_V1",
        "KEY_FILE",
        "--ssl-keyfile",
        "PASSTHROUGH",
        "PWD",
        "OMP_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES",
    ],
)
def test_names_that_are_not_secret(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    "value",
    [
        HF,
        "sk-proj-abcdefghijklmnopqrstuvwxyz",
        "ghp_abcdefghijklmnopqrstuvwxyz0123",
        "AKIAABCDEFGHIJKLMNOP",
        "postgres://app:s3cret@db:5432/x",
        f"Bearer {HF}",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
    ],
)
def test_secret_values(value: str) -> None:
    assert is_secret_value(value)


@pytest.mark.parametrize("value", ["1", "spawn", "org/model", "https://example.org/x", "DEBUG", "hf_transfer"])
def test_values_that_are_not_secret(value: str) -> None:
    assert not is_secret_value(value)


def test_mask_env_keeps_names_and_masks_secret_values() -> None:
    env = {"VLLM_USE_V1": "1", "HF_TOKEN": "anything", "NOTE": f"token is {HF}", "URL": "http://u:p@h/"}
    assert mask_env(env) == {"VLLM_USE_V1": "1", "HF_TOKEN": "***", "NOTE": "***", "URL": "***"}
    assert env["HF_TOKEN"] == "anything"  # a new dict: the profile is not changed


def test_redact_text() -> None:
    assert redact(f"login --token {HF} && run") == "login --token *** && run"
    assert redact("--api-key abc123 --dtype half") == "--api-key *** --dtype half"
    assert redact("HF_TOKEN=abc VLLM_USE_V1=1") == "HF_TOKEN=*** VLLM_USE_V1=1"
    assert redact("password: hunter2") == "password: ***"
    assert redact("git clone https://me:pw@example.org/r") == "git clone https://***@example.org/r"
    assert redact("environment HF_TOKEN looks like a secret") == "environment HF_TOKEN looks like a secret"
    assert redact("shell step '--token ***'") == "shell step '--token ***'"


def test_redact_words() -> None:
    words = ["cli", "login", "--token", "abc", "HF_TOKEN=x", "A=1", HF, "--hf-token=y", "ok"]
    assert redact_words(words) == [
        "cli",
        "login",
        "--token",
        "***",
        "HF_TOKEN=***",
        "A=1",
        "***",
        "--hf-token=***",
        "ok",
    ]
