"""vLLM's command line as modelctl writes it: the flags it manages, and the argv of a model server.

Checked against `vllm serve`'s argument parser (vllm/engine/arg_utils.py and
vllm/entrypoints/openai/cli_args.py) of the versions the profiles pin.
"""

from __future__ import annotations

# Flags modelctl derives from the profile and the GPU; a profile setting them in vllm_args would
# silently fight the plan, so they are refused with a pointer to the key that owns them.
MANAGED_FLAGS = {
    "--model": "model",
    "--port": "port",
    "--host": "MODELCTL_HOST",
    "--served-model-name": "served_model_name",
    "--max-model-len": "max_model_len",
    "--max-num-seqs": "max_num_seqs",
    "--gpu-memory-utilization": "vram_gib (modelctl computes the utilization from it)",
}


def server_argv(
    *,
    model: str,
    served_model: str,
    port: int,
    utilization: float,
    max_model_len: int,
    max_num_seqs: int,
    extra: list[str],
) -> list[str]:
    """The managed flags first (always --model: old entrypoints ignore a positional), then the profile's."""
    return [
        "--model",
        model,
        "--served-model-name",
        served_model,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--gpu-memory-utilization",
        f"{utilization:.2f}",
        "--max-model-len",
        str(max_model_len),
        "--max-num-seqs",
        str(max_num_seqs),
        *extra,
    ]
