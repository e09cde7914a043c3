"""Diagnosis, word for word: the cause and the advice a user reads for each rule's variants (with and
without the figure the log may hold), the fallbacks, and what a timed-out start's log showed."""

from __future__ import annotations

from modelctl.vllm.diagnosis import describe_progress, diagnose, diagnose_timeout

ENGINE = "(EngineCore pid=245) ERROR 08-25 10:02:21 [core.py:1584] "


def test_free_memory_names_the_figures_and_what_to_do():
    found = diagnose(
        ENGINE + "ValueError: Free memory on device cuda:0 (5.81/11.94 GiB) on startup is less than desired GPU "
        "memory utilization (0.85, 10.15 GiB). Decrease GPU memory utilization or reduce GPU memory used by others."
    )
    assert found.cause == (
        "vLLM found only 5.81 of 11.94 GiB free at start-up, less than the 0.85 of the GPU it was asked to take "
        "(10.15 GiB)"
    )
    assert found.advice == (
        "another process holds GPU memory (see `modelctl gpu` or nvidia-smi) - stop it, or lower vram_gib in the profile"
    )


def test_max_seq_len_with_and_without_vllms_estimate():
    with_estimate = diagnose(
        ENGINE + "ValueError: To serve at least one request with the model's max seq len (262144), (28.0 GiB KV "
        "cache is needed, which is larger than the available KV cache memory (2.05 GiB). Based on the available "
        "memory, the estimated maximum model length is 19184. Try increasing `gpu_memory_utilization`."
    )
    assert with_estimate.cause == (
        "the KV cache cannot hold one request of max_model_len 262144; vLLM estimates the maximum model length at 19184"
    )
    assert with_estimate.advice == "set max_model_len to 19184 or less, or raise vram_gib in the profile"
    without = diagnose(
        ENGINE + "ValueError: To serve at least one request with the model's max seq len (32768), (3.5 GiB KV "
        "cache is needed, which is larger than the available KV cache memory (0.01 GiB). Try increasing it."
    )
    assert without.cause == "the KV cache cannot hold one request of max_model_len 32768"
    assert without.advice == "lower max_model_len, or raise vram_gib in the profile"


def test_an_unlisted_cuda_error_gets_the_general_advice_without_its_full_stop():
    found = diagnose(ENGINE + "torch.AcceleratorError: CUDA error: unspecified launch failure.")
    assert found.cause == "CUDA failed in the engine: unspecified launch failure"
    assert found.advice == (
        "a CUDA error, not a memory shortage: check the driver with nvidia-smi, try --enforce-eager in "
        "vllm_args or another vllm/vllm-openai tag; `modelctl logs` shows the traceback"
    )
    known = diagnose(ENGINE + "torch.AcceleratorError: CUDA error: an illegal memory access was encountered.")
    assert known.advice.startswith("a GPU kernel of this image faulted on this model and GPU: add --enforce-eager")


def test_repository_not_found_with_and_without_the_repository_in_the_log():
    named = diagnose("(APIServer pid=1) Repository Not Found for url: https://huggingface.co/org/misspelt/resolve/main")
    assert named.cause == (
        "Hugging Face has no repository org/misspelt this start could see: a misspelt model id, "
        "or a private repository and no token"
    )
    assert named.advice == (
        "check `model` in the profile (the Hub id, e.g. org/name); if the repository is private, "
        "export HF_TOKEN with access to it before the switch"
    )
    unnamed = diagnose("huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error.")
    assert unnamed.cause.startswith("Hugging Face has no repository this start could see: a misspelt")


def test_an_architecture_moved_to_a_plugin_names_the_plugin_in_the_advice():
    found = diagnose(
        "ValueError: Model architecture FooForCausalLM is not supported in-tree anymore. "
        "Please install the plugin at https://github.com/org/foo-plugin if you want to use it."
    )
    assert found.cause == (
        "vLLM moved the architecture FooForCausalLM out of its tree: it needs the plugin https://github.com/org/foo-plugin"
    )
    assert found.advice == (
        "use an image with that plugin installed (build one FROM this tag that pip-installs "
        "https://github.com/org/foo-plugin) as the profile's image"
    )


def test_one_unknown_flag_is_it_two_are_them():
    one = diagnose("vllm: error: unrecognized arguments: --shutdown-timeout 30")
    assert one.cause == "this image's vLLM does not know --shutdown-timeout (argparse: unrecognized arguments)"
    assert one.advice == (
        "remove --shutdown-timeout from vllm_args in the profile, or pin a vllm/vllm-openai tag whose vLLM has it"
    )
    two = diagnose("vllm: error: unrecognized arguments: --a 1 --b")
    assert two.advice.endswith(
        "remove --a --b from vllm_args in the profile, or pin a vllm/vllm-openai tag whose vLLM has them"
    )


def test_a_port_in_use_without_a_port_in_the_log():
    found = diagnose("(APIServer pid=1) OSError: [Errno 98] Address already in use")
    assert found.cause == "the port is already in use"
    assert found.advice == "stop what listens on the port (ss -ltnp), or give the profile another port"
    numbered = diagnose("Bind for 127.0.0.1:8011 failed: port is already allocated")
    assert numbered.cause == "the port is already in use (8011)"
    assert numbered.advice == "stop what listens on port 8011 (ss -ltnp), or give the profile another port"


def test_a_fixed_rule_gives_its_cause_and_advice():
    found = diagnose("ValueError: Please pass the argument `trust_remote_code=True` to allow custom code to be run.")
    assert (found.cause, found.advice, found.key) == (
        "the model needs its own code from the Hugging Face repository",
        "add --trust-remote-code to vllm_args in the profile",
        "trust_remote_code",
    )


def test_the_last_error_line_is_the_fallback():
    found = diagnose("INFO starting\nKeyError: 'first'\nsomething\nRuntimeError: the last one\nbye\n")
    assert (found.cause, found.advice, found.evidence, found.key) == (
        "RuntimeError: the last one",
        "see `modelctl logs` for the whole log",
        "RuntimeError: the last one",
        "error_line",
    )


def test_the_engine_wrapper_alone_says_the_root_cause_was_not_kept():
    found = diagnose("INFO a line\nRuntimeError: Engine core initialization failed. See root cause above.\nmore\n")
    assert found.cause == "vLLM's engine failed to start and the log kept no root cause (it may be cut off above)"
    assert found.advice == "see `modelctl logs` for the whole log"
    assert found.evidence == "RuntimeError: Engine core initialization failed. See root cause above."
    assert found.key == "engine_init_failed"


def test_the_latest_progress_line_wins_wherever_it_is():
    log = "Starting to load model org/m...\nLoading weights took 2.10 GiB and 3.2 seconds\nsome other line\n"
    assert describe_progress(log).startswith("profiling memory with a first forward pass")


def test_a_carriage_return_ends_a_line():
    found = diagnose_timeout("booting\rstill booting\rnearly there")
    assert found.cause == (
        "the log shows no start-up step modelctl recognises; its last lines: booting | still booting | nearly there"
    )
    assert found.evidence == "nearly there"
    assert found.key == "no_progress"
    assert found.advice == (
        "read the whole log (`modelctl logs`); a longer startup_timeout helps only once the log shows "
        "vLLM loading, compiling or capturing CUDA graphs"
    )


def test_the_last_three_lines_each_cut_at_160_characters():
    exact, long = "e" * 160, "l" * 161
    found = diagnose_timeout(f"one\ntwo\n{exact}\n\n{long}\n")
    # 161 characters: the first 157 and "..." (160 in all); 160 characters stay whole; "one" is a 4th line
    assert found.cause.endswith(f"its last lines: two | {exact} | {'l' * 157}...")


def test_an_error_after_the_last_step_is_the_cause_of_a_timeout():
    found = diagnose_timeout("Starting to load model org/m...\nTraceback (most recent call last):\nKeyError: 'x'\n")
    assert (found.cause, found.evidence, found.key) == ("KeyError: 'x'", "KeyError: 'x'", "error_line")


def test_a_server_that_started_but_never_answered():
    found = diagnose_timeout(
        "(APIServer pid=1) INFO 08-25 10:03:01 [api_server.py:1] Starting vLLM API server 0 on http://0.0.0.0:8000\n"
    )
    assert found.key == "served_but_not_ready"
    assert found.cause == (
        "the log shows vLLM serving: vLLM had started its server (Starting vLLM API server 0 on http://0.0.0.0:8000), "
        "yet /v1/models did not answer"
    )
    assert found.advice == (
        "a longer startup_timeout will not help: check that the profile's port is the one vLLM "
        "listens on and that nothing else answers there"
    )


def test_an_empty_log():
    found = diagnose_timeout("  \n")
    assert (found.cause, found.key, found.evidence) == ("the container printed nothing", "no_progress", "")
    assert found.advice == ("see `modelctl logs`; a longer startup_timeout helps only once the log shows vLLM loading")


def test_the_evidence_is_the_matched_line_even_after_a_progress_bar_of_carriage_returns():
    found = diagnose("Loading: 10%\rLoading: 100%\rtorch.AcceleratorError: CUDA error: unspecified launch failure\n")
    assert found.evidence == "torch.AcceleratorError: CUDA error: unspecified launch failure"
