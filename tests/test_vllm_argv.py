"""Reading vLLM's command line as users write it in compose files."""

from __future__ import annotations

from modelctl.vllm_argv import VllmArgs, human_int, server_command

HF = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


def test_short_flags_keep_their_value() -> None:
    args = VllmArgs(["org/m", "-tp", "2", "-pp=2", "-q", "awq", "-O3", "--enforce-eager"])
    assert args.positional_model == "org/m"
    assert args.rest == ["-tp", "2", "-pp=2", "-q", "awq", "-O3", "--enforce-eager"]
    assert args.positionals == []


def test_a_flag_given_twice_the_last_counts_and_the_first_is_noted() -> None:
    args = VllmArgs(["--max-model-len", "1024", "--dtype", "half", "--max-model-len=4096"])
    assert args.take("--max-model-len") == "4096"
    assert args.notes == [("--max-model-len 1024", "given again later as 4096; the last one counts")]
    assert args.rest == ["--dtype", "half"]


def test_a_secret_flag_given_twice_is_noted_masked() -> None:
    args = VllmArgs(["--api-key", "one", "--api-key", "two"])
    assert args.take("--api-key") == "two"
    assert args.notes == [("--api-key ***", "given again later as ***; the last one counts")]


def test_booleans_negative_numbers_and_served_names() -> None:
    args = VllmArgs(
        [
            "--model",
            "m",
            "--trust-remote-code",
            "extra",
            "--seed",
            "-1",
            "--served-model-name",
            "a",
            "b",
            "--port",
            "8001",
        ]
    )
    assert args.take_all("--served-model-name") == ["a", "b"]
    assert args.take("--port") == "8001"
    assert args.take("--model") == "m"
    assert args.rest == ["--trust-remote-code", "--seed", "-1"]
    assert args.positionals == ["extra"]  # a boolean flag never takes the next word


def test_secret_flags_are_taken_out() -> None:
    args = VllmArgs(
        [
            "--api-key",
            "k",
            f"--hf-token={HF}",
            "--chat-template",
            HF,
            "--return-tokens-as-token-ids",
            "--max-num-batched-tokens",
            "8192",
        ]
    )
    assert args.take_secrets() == ["--api-key", "--hf-token", "--chat-template"]
    assert args.rest == ["--return-tokens-as-token-ids", "--max-num-batched-tokens", "8192"]


def test_server_command_forms() -> None:
    assert server_command(["vllm", "serve", "org/m", "-tp", "2"], image_is_server=False).args == ["org/m", "-tp", "2"]
    found = server_command(
        ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"], image_is_server=False
    )
    assert found.args == ["--model", "m"]
    assert server_command(["--model", "m"], image_is_server=True).args == ["--model", "m"]
    assert server_command(["python3", "app.py"], image_is_server=False).args is None

    script = server_command(
        [
            "/bin/bash",
            "-c",
            f"pip install x && huggingface-cli login --token {HF}; A=1 HF_TOKEN=z exec vllm serve m --dtype half",
        ],
        image_is_server=False,
    )
    assert script.args == ["m", "--dtype", "half"]
    assert script.env == ["A=1", "HF_TOKEN=z"]  # the caller filters secret names out of the env
    assert script.notes == [
        ("shell step 'pip install x'", "modelctl runs vLLM only; bake other steps into the image"),
        ("shell step 'huggingface-cli login --token ***'", "modelctl runs vLLM only; bake other steps into the image"),
    ]


def test_human_int() -> None:
    assert [human_int(v) for v in ("8192", "8k", "8K", "1m", "1M", "1.5k", "x", "0.5")] == [
        8192,
        8000,
        8192,
        1000000,
        1048576,
        1500,
        None,
        None,
    ]
