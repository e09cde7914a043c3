"""Log diagnosis: vLLM's own failure texts (shared/CONTEXT.md) map to a cause and a fix."""

from __future__ import annotations

import pytest

from modelctl.vllm.diagnosis import diagnose

WRAPPER = "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}"


def log(*lines: str) -> str:
    return "\n".join(["INFO 11-24 21:00:00 [api_server.py:1] vLLM API server version 0.11.1", *lines, WRAPPER])


@pytest.mark.parametrize(
    ("text", "cause", "advice"),
    [
        (
            "ValueError: Free memory on device cuda:0 (5.81/11.94 GiB) on startup is less than desired GPU "
            "memory utilization (0.85, 10.15 GiB). Decrease GPU memory utilization or reduce GPU memory used "
            "by other processes.",
            "only 5.81 of 11.94 GiB free at start-up, less than the 0.85",
            "another process holds GPU memory",
        ),
        (  # older releases print no device name
            "ValueError: Free memory on device (5.81/11.94 GiB) on startup is less than desired GPU memory "
            "utilization (0.85, 10.15 GiB).",
            "only 5.81 of 11.94 GiB free",
            "lower vram_gib",
        ),
        (
            "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
            "when initializing the engine.",
            "no GPU memory was left for the KV cache",
            "raise vram_gib",
        ),
        (
            "ValueError: To serve at least one request with the models's max seq len (32768), (3.50 GiB KV "
            "cache is needed, which is larger than the available KV cache memory (1.20 GiB). Based on the "
            "available memory, the estimated maximum model length is 11216. Try increasing "
            "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
            "max_model_len 32768; vLLM estimates the maximum model length at 11216",
            "set max_model_len to 11216 or less",
        ),
        (
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total "
            "capacity of 11.94 GiB of which 512.00 MiB is free.",
            "CUDA ran out of memory",
            "lower max_num_seqs",
        ),
        (
            "ValueError: Failed to load the model config. If the model is a custom model not yet available "
            "in the HuggingFace transformers library, consider setting `trust_remote_code=True` in LLM or "
            "using the `--trust-remote-code` flag in the CLI.",
            "needs its own code",
            "add --trust-remote-code",
        ),
        (
            "ValueError: Model architectures ['DotsOCRForCausalLM'] are not supported for now. Supported "
            "architectures: dict_keys([...])",
            "does not support the architecture 'DotsOCRForCausalLM'",
            "newer vllm/vllm-openai tag",
        ),
        (
            "huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: Root=1-abc) Cannot access "
            "gated repo for url https://huggingface.co/org/m/resolve/main/config.json.",
            "gated on Hugging Face",
            "HF_TOKEN",
        ),
    ],
)
def test_known_vllm_failures(text, cause, advice):
    found = diagnose(log("Traceback (most recent call last):", text))
    assert found is not None
    assert cause in found.cause
    assert advice in found.advice


def test_engine_errors_for_port_and_image():
    port = diagnose(
        "driver failed programming external connectivity: Bind for 127.0.0.1:8000 failed: port is already allocated"
    )
    assert port is not None and "port is already in use" in port.cause
    image = diagnose("pull access denied for vllm/vllm-openai, repository does not exist")
    assert image is not None and "could not be found" in image.cause


def test_unknown_failure_names_the_root_cause_not_the_wrapper():
    found = diagnose(log("KeyError: 'vision_config'"))
    assert found is not None and found.cause == "KeyError: 'vision_config'"


def test_clean_log_has_no_diagnosis():
    assert diagnose("INFO Starting vLLM API server on http://0.0.0.0:8000\nINFO Loading weights took 3.1 s") is None


def test_evidence_is_the_line_the_cause_came_from():
    found = diagnose(
        log("Traceback (most recent call last):", "  x = 1", "torch.OutOfMemoryError: CUDA out of memory. Tried")
    )
    assert found is not None and found.evidence == "torch.OutOfMemoryError: CUDA out of memory. Tried"
