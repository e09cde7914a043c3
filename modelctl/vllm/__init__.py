"""What a vLLM OpenAI server looks like from outside: one test for the runtime (containers on the
engine) and the importer (services in a compose file), so both find the same servers. Pure.
"""

from __future__ import annotations

import re

# vllm/vllm-openai from any registry (docker.io/, a mirror), any tag or digest.
_IMAGE = re.compile(r"(^|/)vllm/vllm-openai[^/]*$")
COMMAND_MARKERS = ("vllm serve", "vllm.entrypoints.openai")


def runs_vllm_server(image: str, command_line: str) -> bool:
    """The official image, or a command line that starts vLLM's OpenAI server."""
    if _IMAGE.search(image.split("@", 1)[0]):
        return True
    return any(marker in command_line for marker in COMMAND_MARKERS)
