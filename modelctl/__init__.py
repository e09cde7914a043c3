"""modelctl: keep exactly one vLLM model running on a small GPU, and swap it with one command."""

__version__ = "0.1.0"
