"""One test for "is this a vLLM OpenAI server", shared by the runtime and import-compose."""

import pytest

from modelctl.vllm import runs_vllm_server


@pytest.mark.parametrize(
    ("image", "command", "expected"),
    [
        ("vllm/vllm-openai:v0.11.1", "", True),
        ("docker.io/vllm/vllm-openai:latest", "", True),
        ("registry.local:5000/vllm/vllm-openai@sha256:abc", "", True),
        ("local/ocr-server:1", "/bin/sh /standin.sh vllm serve --model y", True),
        ("python:3.11", "python3 -m vllm.entrypoints.openai.api_server --model m", True),
        ("myvllm/vllm-openai-fork:1", "", False),
        ("redis:7", "redis-server", False),
    ],
)
def test_runs_vllm_server(image, command, expected):
    assert runs_vllm_server(image, command) is expected
