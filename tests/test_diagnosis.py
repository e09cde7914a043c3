"""Log diagnosis against vLLM's own texts: tests/vllm_corpus/ holds the lines of 0.11.1 and 0.33.0,
each with the source line it was read from. Every failure is named, nothing fires on a normal start,
and a timeout says what the log shows vLLM was doing - or quotes its last lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelctl.vllm.diagnosis import describe_progress, diagnose, diagnose_timeout

CORPUS_DIR = Path(__file__).parent / "vllm_corpus"
VERSIONS = ["0.11.1", "0.33.0"]
CORPUS = {v: yaml.safe_load((CORPUS_DIR / f"vllm-{v}.yaml").read_text(encoding="utf-8")) for v in VERSIONS}


def entries(section: str) -> list[tuple[str, dict]]:
    return [(v, e) for v in VERSIONS for e in CORPUS[v][section]]


def ids(section: str) -> list[str]:
    return [f"{v}-{e['id']}" for v, e in entries(section)]


def startup(version: str, *ids: str) -> list[str]:
    by_id = {e["id"]: e["line"] for e in CORPUS[version]["startup"]}
    return [by_id[i] for i in ids]


# What a start that fails prints before the failure: version, args, engine config (trust_remote_code=...).
HEAD = ("version", "non_default_args", "resolved_arch", "engine_config_no_trc")
WRAPPER = {
    "0.11.1": "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause above. "
    "Failed core proc(s): {'EngineCore_DP0': 1}",
    "0.33.0": "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): "
    "{'EngineCore': 1}",
}

# The rule each corpus `cause` must be named by, with what the user reads: (cause, advice) fragments.
EXPECTED = {
    "free_memory": (
        "at start-up, less than the 0.85 of the GPU it was asked to take",
        "another process holds GPU memory",
    ),
    "weights_dont_fit": (
        "the model's weights alone do not fit in the GPU memory",
        "fewer sequences or a shorter context will not help",
    ),
    "max_seq_len_too_long": ("the KV cache cannot hold one request of max_model_len", "max_model_len"),
    "kv_cache_too_small": ("no GPU memory was left for the KV cache", "raise vram_gib"),
    "cuda_oom": ("CUDA ran out of memory", "lower max_num_seqs or max_model_len"),
    "cuda_error": ("CUDA failed in the engine: ", "vllm/vllm-openai tag"),
    "trust_remote_code": ("the model needs its own code", "add --trust-remote-code to vllm_args"),
    "unsupported_arch": ("does not support the architecture 'MyOCRForConditionalGeneration'", "newer vllm/vllm-openai"),
    "arch_removed": ("it was supported until v0.", "pin an older vllm/vllm-openai tag"),
    "arch_plugin": (
        "needs the plugin https://github.com/vllm-project/bart-plugin",
        "use an image with that plugin installed",
    ),
    "gated_repo": ("is gated on Hugging Face", "accept the model's licence"),
    "repo_not_found": ("a misspelt model id, or a private repository", "check `model` in the profile"),
    "unknown_flag": ("this image's vLLM does not know --", "from vllm_args in the profile, or pin a"),
    "invalid_choice": ("vLLM does not accept 'bf16' for --dtype", "'auto', 'bfloat16', 'float'"),
    "port_in_use": ("the port is already in use", "give the profile another port"),
    "engine_init_failed": ("vLLM's engine failed to start and the log kept no root cause", "modelctl logs"),
}


def test_every_corpus_cause_has_a_rule_and_every_rule_a_corpus_text():
    causes = {e["cause"] for _, e in entries("failures")}
    assert causes == set(EXPECTED)


@pytest.mark.parametrize(("version", "entry"), entries("failures"), ids=ids("failures"))
def test_each_failure_line_alone_is_named(version, entry):
    found = diagnose(entry["line"])
    assert found is not None and found.key == entry["cause"], entry["source"]
    cause, advice = EXPECTED[entry["cause"]]
    assert cause in found.cause
    assert advice in found.advice
    assert found.evidence == entry["line"].strip()


@pytest.mark.parametrize(("version", "entry"), entries("failures"), ids=ids("failures"))
def test_each_failure_in_a_real_log_is_named_after_the_normal_start_lines(version, entry):
    text = "\n".join([*startup(version, *HEAD, "start_load"), entry["line"], WRAPPER[version]])
    found = diagnose(text)
    assert found is not None and found.key == entry["cause"]
    assert "needs its own code" not in found.cause or entry["cause"] == "trust_remote_code"
    # a hang after the failure (the API server waiting on a dead engine) names the same cause
    assert diagnose_timeout(text).key == entry["cause"]


@pytest.mark.parametrize("version", VERSIONS)
def test_no_rule_fires_on_a_normal_start(version):
    lines = [e["line"] for e in CORPUS[version]["startup"] + CORPUS[version]["progress"]]
    assert diagnose("\n".join(lines)) is None
    for line in lines:
        assert diagnose(line) is None, line


@pytest.mark.parametrize(("version", "entry"), entries("startup"), ids=ids("startup"))
def test_start_up_lines_name_no_failure_on_a_timeout_either(version, entry):
    assert diagnose_timeout(entry["line"]).key in {"still_starting", "served_but_not_ready", "no_progress"}


# --- the trust_remote_code misfire: every start prints `trust_remote_code=` twice -----------------


@pytest.mark.parametrize("version", VERSIONS)
def test_port_in_use_after_the_engine_line_is_not_trust_remote_code(version):
    text = "\n".join(
        [
            *startup(version, "version", "non_default_args", "engine_config"),
            "Traceback (most recent call last):",
            "OSError: [Errno 98] Address already in use",
        ]
    )
    found = diagnose(text)
    assert found is not None and found.key == "port_in_use"
    assert found.cause == "the port is already in use (8000)"  # vLLM's default: not among the non-default args
    assert found.advice == "stop what listens on port 8000 (ss -ltnp), or give the profile another port"


@pytest.mark.parametrize("version", VERSIONS)
def test_cuda_illegal_memory_access_after_the_engine_line_is_not_trust_remote_code(version):
    text = "\n".join(
        [
            *startup(version, *HEAD, "start_load", "weights_took"),
            "torch.AcceleratorError: CUDA error: an illegal memory access was encountered",
            "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
            "below might be incorrect.",
            "For debugging consider passing CUDA_LAUNCH_BLOCKING=1",
            WRAPPER[version],
        ]
    )
    found = diagnose(text)
    assert found is not None and found.key == "cuda_error"
    assert found.cause == "CUDA failed in the engine: an illegal memory access was encountered"
    assert "add --enforce-eager to vllm_args" in found.advice
    assert "trust-remote-code" not in found.advice


@pytest.mark.parametrize("version", VERSIONS)
def test_a_hang_after_the_engine_line_is_not_trust_remote_code(version):
    text = "\n".join(startup(version, "version", "non_default_args", "engine_config", "engine_config_no_trc"))
    assert diagnose(text) is None
    found = diagnose_timeout(text)
    assert found.key == "no_progress"
    assert found.cause.startswith("the log shows no start-up step modelctl recognises; its last lines: ")
    assert "needs its own code" not in found.cause and "--trust-remote-code" not in found.advice


def test_the_stand_ins_old_hang_log_is_not_trust_remote_code():
    text = (
        "INFO 11-24 21:00:00 [core.py:93] Initializing a V1 LLM engine (v0.11.1) with config: "
        "model='m', trust_remote_code=False, dtype=torch.bfloat16\nINFO Loading model weights...\n"
    )
    assert diagnose(text) is None
    assert diagnose_timeout(text).key == "no_progress"


# --- texts whose details the advice must carry ----------------------------------------------------


def test_arch_removed_says_pin_an_older_tag_never_a_newer_one():
    found = diagnose(
        "  Value error, Model architecture Florence2ForConditionalGeneration was supported in vLLM until v0.10.2, "
        "and is not supported anymore. Please use an older version of vLLM if you want to use this model "
        "architecture. [type=value_error, input_value=ArgsKwargs((), {'model': 'microsoft/Florence-2-large'})]"
    )
    assert found is not None and found.key == "arch_removed"
    assert (
        found.cause == "vLLM dropped the architecture Florence2ForConditionalGeneration: it was supported until v0.10.2"
    )
    assert found.advice == (
        "pin an older vllm/vllm-openai tag, v0.10.2 at most, in the profile's image, or choose another model "
        "- no newer tag brings it back"
    )


def test_unknown_flags_are_all_named_without_their_values():
    found = diagnose(
        "usage: vllm [-h] [-v] {chat,complete,serve} ...\nvllm: error: unrecognized arguments: --swap-space 4 --task generate"
    )
    assert found is not None
    assert found.cause == "this image's vLLM does not know --swap-space --task (argparse: unrecognized arguments)"
    assert found.advice == (
        "remove --swap-space --task from vllm_args in the profile, or pin a vllm/vllm-openai tag whose vLLM has them"
    )


def test_invalid_choice_names_the_value_and_the_choices():
    found = diagnose(
        "vllm serve: error: argument --dtype: invalid choice: 'bf16' (choose from 'auto', 'bfloat16', 'half')"
    )
    assert found is not None
    assert found.cause == "vLLM does not accept 'bf16' for --dtype"
    assert found.advice == "set --dtype in vllm_args to one of: 'auto', 'bfloat16', 'half'"


def test_port_is_read_from_the_non_default_args_or_dockers_message():
    text = "\n".join(
        [
            "(APIServer pid=1) INFO 08-25 10:02:01 [startup.py:96] non-default args: {'model_tag': 'm', "
            "'host': '0.0.0.0', 'port': 8003, 'trust_remote_code': True}",
            "OSError: [Errno 98] Address already in use",
        ]
    )
    found = diagnose(text)
    assert found is not None and found.cause == "the port is already in use (8003)"
    docker = diagnose(
        "driver failed programming external connectivity: Bind for 127.0.0.1:8001 failed: port is already allocated"
    )
    assert docker is not None and docker.cause == "the port is already in use (8001)"
    bare = diagnose("OSError: [Errno 98] Address already in use")
    assert bare is not None and bare.cause == "the port is already in use"


def test_401_alone_is_not_a_gated_model_and_not_found_names_the_repo():
    not_found = diagnose(
        "huggingface_hub.errors.RepositoryNotFoundError: 401 Client Error. (Request ID: Root=1-abc)\n\n"
        "Repository Not Found for url: https://huggingface.co/rednote-hilab/dots-ocr/resolve/main/config.json.\n"
        "Please make sure you specified the correct `repo_id` and `repo_type`.\n"
        "If you are trying to access a private or gated repo, make sure you are authenticated."
    )
    assert not_found is not None and not_found.key == "repo_not_found"
    assert not_found.cause == (
        "Hugging Face has no repository rednote-hilab/dots-ocr this start could see: a misspelt model id, "
        "or a private repository and no token"
    )
    assert "HF_TOKEN" in not_found.advice
    gated = diagnose(
        "OSError: You are trying to access a gated repo.\nMake sure to have access to it at "
        "https://huggingface.co/meta-llama/Llama-3.2-11B-Vision-Instruct.\n401 Client Error. (Request ID: x)\n\n"
        "Cannot access gated repo for url https://huggingface.co/meta-llama/Llama-3.2-11B-Vision-Instruct/"
        "resolve/main/config.json."
    )
    assert gated is not None and gated.key == "gated_repo"
    assert gated.cause == (
        "the model meta-llama/Llama-3.2-11B-Vision-Instruct is gated on Hugging Face and the token given "
        "(if any) has no access"
    )
    assert gated.advice == (
        "accept the model's licence on its huggingface.co page, then export HF_TOKEN (a token of that account) "
        "before the switch"
    )


def test_weights_that_do_not_fit_win_over_the_torch_oom_that_follows():
    failure = next(e for e in CORPUS["0.33.0"]["failures"] if e["id"] == "weights_dont_fit")
    oom = next(e for e in CORPUS["0.33.0"]["failures"] if e["id"] == "torch_cuda_oom")
    found = diagnose("\n".join([failure["line"], oom["line"], WRAPPER["0.33.0"]]))
    assert found is not None and found.key == "weights_dont_fit"
    assert found.advice == (
        "fewer sequences or a shorter context will not help: free the GPU of other processes (`modelctl gpu`), "
        "use a GPU with more memory, or a quantized variant of the model"
    )


def test_max_seq_len_carries_the_estimate():
    failure = next(e for e in CORPUS["0.33.0"]["failures"] if e["id"] == "max_seq_len")
    found = diagnose(failure["line"])
    assert found is not None
    assert found.cause == (
        "the KV cache cannot hold one request of max_model_len 262144; vLLM estimates the maximum model length at 19184"
    )
    assert found.advice == "set max_model_len to 19184 or less, or raise vram_gib in the profile"


def test_free_memory_names_the_figures():
    found = diagnose(
        "ValueError: Free memory on device cuda:0 (5.81/11.94 GiB) on startup is less than desired GPU memory "
        "utilization (0.85, 10.15 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes."
    )
    assert found is not None
    assert found.cause == (
        "vLLM found only 5.81 of 11.94 GiB free at start-up, less than the 0.85 of the GPU it was asked to take "
        "(10.15 GiB)"
    )


def test_root_cause_is_surfaced_from_a_long_0_11_traceback_with_colour_codes():
    prefix = "\x1b[1;36m(EngineCore_DP0 pid=245)\x1b[0;0m ERROR 11-20 09:14:21 [core.py:842] "
    frames = [
        f'{prefix}  File "/usr/local/lib/python3.12/site-packages/vllm/x{i}.py", line {i}, in f\r' for i in range(60)
    ]
    text = "\n".join(
        [
            f"{prefix}EngineCore failed to start.\r",
            f"{prefix}Traceback (most recent call last):\r",
            *frames,
            f"{prefix}ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
            "when initializing the engine.\r",
            *[f'  File "/x{i}.py", line {i}' for i in range(40)],
            WRAPPER["0.11.1"],
        ]
    )
    found = diagnose(text)
    assert found is not None and found.key == "kv_cache_too_small"
    assert found.evidence == (
        "(EngineCore_DP0 pid=245) ERROR 11-20 09:14:21 [core.py:842] ValueError: No available memory for the "
        "cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine."
    )


def test_unknown_failure_names_the_root_cause_not_the_wrapper():
    text = "\n".join(
        [
            "(EngineCore pid=245) ERROR 08-25 10:02:21 [core.py:1584] EngineCore failed to start.",
            "(EngineCore pid=245) ERROR 08-25 10:02:21 [core.py:1584] KeyError: 'vision_config'",
            WRAPPER["0.33.0"],
        ]
    )
    found = diagnose(text)
    assert found is not None and found.cause == "KeyError: 'vision_config'"
    assert found.evidence == "(EngineCore pid=245) ERROR 08-25 10:02:21 [core.py:1584] KeyError: 'vision_config'"


def test_engine_errors_for_port_and_image():
    image = diagnose("pull access denied for vllm/vllm-openai, repository does not exist")
    assert image is not None and image.key == "image_not_found" and "could not be found" in image.cause


def test_clean_log_has_no_diagnosis():
    assert diagnose("INFO Starting vLLM API server on http://0.0.0.0:8000\nINFO Loading weights took 3.1 s") is None


# --- timeouts ---------------------------------------------------------------------------------

DOING = {  # corpus `phase` -> what the timeout message says vLLM was doing
    "downloading": "downloading or reading the weights of rednote-hilab/dots.ocr (vLLM prints nothing while it downloads)",
    "loading_weights": "loading the weights (",
    "profiling": "profiling memory",
    "compiling": "compiling the model (",
    "capturing_cuda_graphs": "capturing CUDA graphs (45%)",
    "kv_cache": "allocating the KV cache and warming up",
    "engine_ready": "starting the API server (the engine had finished initialising)",
    "serving": "serving: vLLM had started its server",
}


@pytest.mark.parametrize(("version", "entry"), entries("progress"), ids=ids("progress"))
def test_each_progress_line_says_what_vllm_was_doing(version, entry):
    text = "\n".join([*startup(version, *HEAD), entry["line"]])
    doing = describe_progress(text)
    assert doing is not None and doing.startswith(DOING[entry["phase"]]), entry["source"]
    found = diagnose_timeout(text)
    assert doing in found.cause
    assert found.evidence and found.evidence in entry["line"]
    if entry["phase"] == "serving":
        assert found.key == "served_but_not_ready"
        assert found.advice.startswith("a longer startup_timeout will not help")
    else:
        assert found.key == "still_starting"
        assert found.cause == f"the log shows vLLM still {doing} when the wait ended"
        assert found.advice == (
            "vLLM was still starting: raise startup_timeout in the profile and switch again "
            "(if it stops at the same step again, read `modelctl logs`)"
        )


def test_the_last_progress_line_wins_and_a_tqdm_bar_reads_its_latest_state():
    bar = (
        "Loading safetensors checkpoint shards:   0% Completed | 0/2 [00:00<?, ?it/s]\r"
        "Loading safetensors checkpoint shards:  50% Completed | 1/2 [00:03<00:03,  3.05s/it]\r"
    )
    text = "\n".join([*startup("0.33.0", *HEAD, "start_load"), bar])
    assert describe_progress(text) == "loading the weights (50% of the checkpoint shards)"


def test_progress_on_0_11_lines_with_colour_codes():
    text = (
        "\x1b[1;36m(EngineCore_DP0 pid=245)\x1b[0;0m Capturing CUDA graphs (decode, FULL):  12%|█▏ | 8/67 "
        "[00:01<00:07, 7.9it/s]"
    )
    assert describe_progress(text) == "capturing CUDA graphs (12%)"


def test_nothing_recognised_quotes_the_last_lines_and_suggests_no_longer_timeout():
    text = "\n".join(
        [*startup("0.33.0", "version", "non_default_args"), "some custom entrypoint line", "waiting for the NFS mount"]
    )
    assert describe_progress(text) is None
    found = diagnose_timeout(text)
    assert found.key == "no_progress"
    assert found.cause.startswith("the log shows no start-up step modelctl recognises; its last lines: ")
    assert found.cause.endswith("some custom entrypoint line | waiting for the NFS mount")
    assert found.evidence == "waiting for the NFS mount"
    assert "raise startup_timeout" not in found.advice
    assert found.advice.startswith("read the whole log (`modelctl logs`)")


def test_an_empty_log_says_so():
    found = diagnose_timeout("")
    assert found.cause == "the container printed nothing"
    assert "raise startup_timeout" not in found.advice


def test_an_error_after_the_last_step_is_reported_instead_of_the_step():
    text = "\n".join([*startup("0.11.1", *HEAD, "start_load"), "KeyError: 'vision_config'"])
    found = diagnose_timeout(text)
    assert found.key == "error_line"
    assert found.cause == "KeyError: 'vision_config'"
    assert "raise startup_timeout" not in found.advice


def test_an_error_before_a_later_step_does_not_stop_the_progress_report():
    text = "\n".join(
        [
            *startup("0.11.1", *HEAD),
            "ImportError: optional kernel missing, falling back",
            *startup("0.11.1", "start_load"),
        ]
    )
    found = diagnose_timeout(text)
    assert found.key == "still_starting"
    assert "downloading or reading the weights" in found.cause
