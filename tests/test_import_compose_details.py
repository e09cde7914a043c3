"""import-compose in-process, line by line: the whole report and profile file of two compose files
that take most branches (each line read and checked by hand: the figures' arithmetic is in the
comments), then the writing refusals, ports, variables, .env, names and the YAML and text readers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from modelctl.compose_import import (
    dotenv_beside,
    import_compose,
    import_compose_file,
    parse_dotenv,
    planned_files,
    profile_name,
    render_profile,
    result_json,
    result_lines,
    unique_name,
    write_profiles,
)
from modelctl.errors import UsageError
from modelctl.safe_yaml import load_yaml, load_yaml_file, one_line, read_text, short_repr
from modelctl.vllm_argv import VllmArgs, human_int, is_flag, server_command

FIRST = """\
x-common: &common
  restart: unless-stopped
  ipc: host
services:
  vllm-Dots_OCR:
    <<: *common
    image: vllm/vllm-openai:v0.11.1
    container_name: dots
    command: >
      --model rednote-hilab/dots.ocr --served-model-name dots dots-alias
      --gpu-memory-utilization 0.5 --max-model-len 8k --port 9000 --host 0.0.0.0
      --trust-remote-code --api-key sk-abcdefghijklmnopqrstuvwx -tp 1 --max-num-seqs 4 --max-num-seqs 6
    environment:
      - VLLM_USE_V1=1
      - HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz
      - NVIDIA_VISIBLE_DEVICES=all
      - NOVALUE
      - URL=${MISSING}
      - LEVEL=${LEVEL:-info}
    ports:
      - "127.0.0.1:9001:9000"
      - "8080:8080"
    volumes:
      - ./hf:/root/.cache/huggingface
      - /models:/models
    deploy:
      resources: {}
  redis:
    image: redis:7
"""

FIRST_DROPPED = [
    ("--host", "modelctl sets it (the server listens on 0.0.0.0 inside; published on MODELCTL_HOST)"),
    ("--api-key", "looks like a secret: never copied into a profile"),
    ("--max-num-seqs 4", "given again later as 6; the last one counts"),
    (
        "environment HF_TOKEN",
        "looks like a secret: never copied into a profile "
        "(modelctl passes HF_TOKEN / MODELCTL_HF_TOKEN from its own environment)",
    ),
    ("environment NVIDIA_VISIBLE_DEVICES", "GPUs come from MODELCTL_GPUS"),
    ("environment NOVALUE", "no value (compose passes the host's): set it in the profile's env"),
    (
        "${MISSING} in environment URL",
        "variable MISSING is not set in the .env beside the compose file (the shell's environment is never "
        "read): left as written; fill it in",
    ),
    ("restart", "modelctl sets restart unless-stopped once the model is ready"),
    ("ipc", "modelctl sets the container's shared memory itself"),
    ("container_name", "modelctl names the container modelctl-NAME"),
    (
        "volumes ./hf:/root/.cache/huggingface",
        "modelctl mounts MODELCTL_HF_CACHE there: set MODELCTL_HF_CACHE=./hf to keep the weights already downloaded",
    ),
    (
        "volumes /models:/models",
        "modelctl mounts only its caches (MODELCTL_HF_CACHE at /root/.cache/huggingface, "
        "MODELCTL_VLLM_CACHE at /root/.cache/vllm)",
    ),
    ("deploy", "GPUs come from MODELCTL_GPUS; modelctl runs one model at a time"),
]
# 0.5 x 12 GiB = 6.0
FIRST_ESTIMATE = (
    "vram_gib 6 is an ESTIMATE: --gpu-memory-utilization 0.5 x 12 GiB assumed GPU total (--gpu-total-gib); "
    "measure it and set what the model needs"
)


def first_result():
    return import_compose(FIRST, gpu_total_gib=12.0, source="compose.yaml", variables={"LEVEL": ""})


def test_the_whole_report_of_a_service_with_everything_to_report():
    result = first_result()
    assert result_lines(result, [Path("out/dots-ocr.yaml")]) == [
        "wrote out/dots-ocr.yaml from service 'vllm-Dots_OCR' (vram_gib 6, estimated)",
        f"  check: {FIRST_ESTIMATE}",
        *(f"  not carried over: {what}: {why}" for what, why in FIRST_DROPPED),
        "ignored (not vLLM servers): redis",
    ]


def test_the_profile_file_of_that_service():
    result = first_result()
    header = [
        "# Imported by `modelctl import-compose` from compose.yaml, service 'vllm-Dots_OCR'.",
        "# Check before the first switch (README 'Profiles'):",
        f"#   - {FIRST_ESTIMATE}",
        "# Not carried over from the compose file:",
        *(f"#   - {what}: {why}" for what, why in FIRST_DROPPED),
    ]
    body = """\
name: dots-ocr
model: rednote-hilab/dots.ocr
image: vllm/vllm-openai:v0.11.1
served_model_name: dots
aliases:
- dots-alias
vram_gib: 6.0
max_model_len: 8000
max_num_seqs: 6
vllm_args:
- --trust-remote-code
- -tp
- '1'
env:
  VLLM_USE_V1: '1'
  URL: ${MISSING}
  LEVEL: info
port: 9001
"""
    assert render_profile(result.imported[0], result) == "\n".join(header) + "\n" + body


def test_the_json_report_of_that_service():
    result = first_result()
    assert result_json(result, [Path("out/dots-ocr.yaml")]) == {
        "source": "compose.yaml",
        "gpu_total_gib": 12.0,
        "written": [
            {
                "service": "vllm-Dots_OCR",
                "profile": "dots-ocr",
                "file": "out/dots-ocr.yaml",
                "vram_gib": 6.0,
                "assumptions": [FIRST_ESTIMATE],
            }
        ],
        "dropped": [{"service": "vllm-Dots_OCR", "what": what, "why": why} for what, why in FIRST_DROPPED],
        "skipped": [],
        "ignored": ["redis"],
    }


SECOND = """\
services:
  first:
    image: vllm/vllm-openai:v0.11.1
    command: ["--model", "org/a", "--served-model-name", "shared,alias-a"]
  second_vllm:
    image: registry.example/vllm/vllm-openai
    entrypoint: ["sh", "-c"]
    command: pip install foo && exec vllm serve /models/m --served-model-name shared alias-a alias-b --gpu-memory-utilization 1.5 --max-model-len lots --swap-space 4 --port 8001
    environment:
      VLLM_LOGGING_LEVEL: DEBUG
      DEBUG: true
      SECRET_KEY: x
    ports:
      - target: 8001
        published: 18001
        host_ip: 0.0.0.0
    volumes:
      - type: bind
        source: /data/models
        target: /models
      - ./cache:/root/.cache/vllm
    healthcheck:
      test: ["CMD", "true"]
    labels: {a: b}
  broken: 5
  nomodel:
    image: vllm/vllm-openai:v0.11.1
    command: --port 8000
  notag-noport:
    image: vllm/vllm-openai
    command: --model org/c
"""

LEN = "--max-model-len not set: assumed 8192 (vLLM would use the model's full context); tune it"
SEQS = "--max-num-seqs not set: assumed 2 (vLLM's default (256) claims far more KV cache); tune it"
NO_PORT = "no published port: using 8000, vLLM's port in the container"
MEASURE = "assumed GPU total (--gpu-total-gib); measure it and set what the model needs"


def test_the_whole_report_of_three_services_that_share_names_and_two_that_give_no_profile():
    result = import_compose(SECOND, gpu_total_gib=16.0, source="compose.yaml")
    paths = [Path("out") / f"{item.profile.name}.yaml" for item in result.imported]
    # 0.9 x 16 GiB = 14.4 for each: vLLM 0.11.1's default, an invalid 1.5 replaced by it, an unknown tag's
    assert result_lines(result, paths) == [
        "wrote out/first.yaml from service 'first' (vram_gib 14.4, estimated)",
        f"  check: {LEN}",
        f"  check: {SEQS}",
        f"  check: vram_gib 14.4 is an ESTIMATE: vLLM 0.11.1's default utilization 0.9 x 16 GiB {MEASURE}",
        f"  check: {NO_PORT}",
        "wrote out/second.yaml from service 'second_vllm' (vram_gib 14.4, estimated)",
        "  check: image had no tag: wrote registry.example/vllm/vllm-openai:latest; pin the version you run "
        "(e.g. v0.33.0)",
        f"  check: {SEQS}",
        f"  check: vram_gib 14.4 is an ESTIMATE: --gpu-memory-utilization 0.9 x 16 GiB {MEASURE}",
        "  check: flags not checked: modelctl has no flag list for the image registry.example/vllm/vllm-openai:latest "
        "(it knows 0.11.1, 0.33.0); vLLM exits 2 on a flag it does not have",
        "  not carried over: shell step 'pip install foo': modelctl runs vLLM only; bake other steps into the image",
        "  not carried over: --max-model-len lots: not a whole number; assumed 8192",
        "  not carried over: --gpu-memory-utilization '1.5': not a fraction in (0, 1]; assumed vLLM's 0.9",
        "  not carried over: served model name shared: service 'first' of this file already serves it: "
        "clients reach this profile as second",
        "  not carried over: alias alias-a: service 'first' of this file already answers to it",
        "  not carried over: environment SECRET_KEY: looks like a secret: never copied into a profile "
        "(modelctl passes HF_TOKEN / MODELCTL_HF_TOKEN from its own environment)",
        "  not carried over: ports host address '0.0.0.0': modelctl publishes on MODELCTL_HOST (127.0.0.1 by default)",
        "  not carried over: volumes /data/models:/models: modelctl mounts only its caches "
        "(MODELCTL_HF_CACHE at /root/.cache/huggingface, MODELCTL_VLLM_CACHE at /root/.cache/vllm)",
        "  not carried over: volumes ./cache:/root/.cache/vllm: modelctl mounts MODELCTL_VLLM_CACHE there "
        "(default: the volume modelctl-vllm-cache): set MODELCTL_VLLM_CACHE=./cache to keep the torch.compile "
        "cache already built",
        "  not carried over: healthcheck: modelctl waits for /v1/models itself",
        "  not carried over: labels: no profile key for it",
        "  not carried over: model /models/m: lies in volume /models, which is not carried over: put it in the "
        "HF cache or bake it into the image",
        "wrote out/notag-noport.yaml from service 'notag-noport' (vram_gib 14.4, estimated)",
        "  check: image had no tag: wrote vllm/vllm-openai:latest; pin the version you run (e.g. v0.33.0)",
        f"  check: {LEN}",
        f"  check: {SEQS}",
        f"  check: vram_gib 14.4 is an ESTIMATE: vLLM's default utilization 0.9 x 16 GiB {MEASURE}",
        f"  check: {NO_PORT}",
        "skipped service 'broken': not a mapping",
        "skipped service 'nomodel': no model (--model or `vllm serve MODEL`)",
    ]
    second = result.imported[1].profile
    assert (second.served_model_name, second.aliases, second.port) == ("second", ["alias-b"], 18001)
    assert second.env == {"VLLM_LOGGING_LEVEL": "DEBUG", "DEBUG": "true"}
    assert second.vllm_args == ["--swap-space", "4"]
    assert result_json(result, paths)["skipped"] == [
        {"service": "broken", "why": "not a mapping"},
        {"service": "nomodel", "why": "no model (--model or `vllm serve MODEL`)"},
    ]
    assert [d.what for d in result.dropped_for("first")] == [], "another service's drops are not first's"


def test_a_file_without_services_names_the_file():
    for text in ("services: {}\n", "- a\n", "version: '3'\n"):
        with pytest.raises(UsageError) as caught:
            import_compose(text, gpu_total_gib=12.0, source="my-compose.yml")
        assert caught.value.message == "my-compose.yml: no 'services' mapping: not a compose file"


def test_a_vllm_service_without_a_server_command_or_a_model_is_skipped_saying_so():
    text = (
        "services:\n  script:\n    image: python:3.11\n    command: [sh, -c, \"echo 'vllm serve'\"]\n"
        "  bare:\n    image: vllm/vllm-openai:v0.11.1\n    entrypoint: [sh, -c, 'echo hi']\n"
    )
    result = import_compose(text, gpu_total_gib=12.0)
    assert result_lines(result, []) == [
        "skipped service 'script': no `vllm serve` or api_server in it",
        "skipped service 'bare': no model (--model or `vllm serve MODEL`)",
    ]
    assert [(d.service, d.what) for d in result.dropped] == [("bare", "shell step 'echo hi'")]


def test_ports_in_each_form(tmp_path):
    def port(ports: str) -> tuple[int, list[str], list[str]]:
        text = f"services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model o/m\n    ports: {ports}\n"
        result = import_compose(text, gpu_total_gib=12.0)
        return (
            result.imported[0].profile.port,
            [f"{d.what}: {d.why}" for d in result.dropped],
            result.imported[0].assumptions,
        )

    assert port('["8000"]')[0] == 8000
    assert "port 8000: the compose file published it on a random host port" in port('["8000"]')[2]
    assert port('["[::1]:9002:8000/tcp"]')[:2] == (
        9002,
        ["ports host address '::1': modelctl publishes on MODELCTL_HOST (127.0.0.1 by default)"],
    )
    assert port('["localhost:9003:8000"]')[:2] == (9003, [])
    assert port("[{target: 8000}]")[0] == 8000
    assert port("[{target: 8000, published: ''}]")[0] == 8000
    assert port("[{target: 8000, published: '9004'}]")[:2] == (9004, [])
    assert port("[{published: 9005}]")[1] == [
        "ports {'published': 9005}: cannot read it (ranges and random host ports have no profile form)"
    ]
    assert port("[[1]]")[1] == ["ports [1]: cannot read it (ranges and random host ports have no profile form)"]
    assert port('"8000:8000"')[:2] == (8000, ["ports: not a list"])
    assert port('["8001:8001", "9000:8000"]')[:2] == (
        9000,
        ["ports '8001:8001': vLLM listens on 8000; only that port is published"],
    )
    assert port("[9006]")[:2] == (8000, ["ports 9006: vLLM listens on 8000; only that port is published"])


def test_a_host_port_range_cannot_be_read():
    text = "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model o/m\n"
    result = import_compose(text + '    ports: ["9000-9001:8000"]\n', gpu_total_gib=12.0)
    assert [f"{d.what}: {d.why}" for d in result.dropped] == [
        "ports '9000-9001:8000': cannot read it (ranges and random host ports have no profile form)"
    ]


def test_variables_in_each_form():
    text = (
        "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n"
        "    command: --model o/m --a $$HOME --b ${SET:+alt} --c ${UNSET:+alt} --d ${UNSET-dflt} --e $SET"
        " --f ${EMPTY-kept} --g ${EMPTY:-dflt} --h ${1bad} --i ${TOKEN_VALUE}\n"
    )
    variables = {"SET": "v", "EMPTY": "", "TOKEN_VALUE": "hf_abcdefghijklmnopqrstuvwxyz"}
    result = import_compose(text, gpu_total_gib=12.0, variables=variables)
    args = result.imported[0].profile.vllm_args
    assert args == [
        "--a",
        "$HOME",
        "--b",
        "alt",
        "--c",
        "--d",
        "dflt",
        "--e",
        "v",
        "--f",
        "--g",
        "dflt",
        "--h",
        "${1bad}",
        "--i",
        "${TOKEN_VALUE}",
    ]
    assert [(d.what, d.why) for d in result.dropped] == [
        ("${1bad} in command", "not a variable compose understands: left as written"),
        (
            "${TOKEN_VALUE} in command",
            "variable TOKEN_VALUE looks like a secret: left as written, never filled in "
            "(modelctl passes HF_TOKEN from its own environment)",
        ),
    ]


def test_a_command_that_cannot_be_split_is_reported():
    text = "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model 'o/m\n"
    result = import_compose(text, gpu_total_gib=12.0)
    assert (result.dropped[0].what, result.dropped[0].why) == (
        'command "--model \'o/m"',
        "cannot be split like a shell would (No closing quotation)",
    )
    assert result_lines(result, [])[-1] == "skipped service 'm': no model (--model or `vllm serve MODEL`)"


def test_environment_that_is_neither_a_list_nor_a_mapping():
    text = "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model o/m\n    environment: x\n"
    result = import_compose(text, gpu_total_gib=12.0)
    assert [(d.what, d.why) for d in result.dropped] == [("environment", "neither a list nor a mapping")]


def test_whole_numbers_and_their_refusals():
    def seqs(value: str):
        text = (
            f"services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model o/m --max-num-seqs {value}\n"
        )
        result = import_compose(text, gpu_total_gib=12.0)
        return result.imported[0].profile.max_num_seqs, [f"{d.what}: {d.why}" for d in result.dropped]

    assert seqs("3") == (3, [])
    assert seqs("0") == (2, ["--max-num-seqs 0: not a whole number; assumed 2"])
    assert seqs("1.5") == (2, ["--max-num-seqs 1.5: not a whole number; assumed 2"])
    long = "9" * 30 + "x" * 20  # over 40 characters: quoted short
    assert seqs(long)[1] == [f"--max-num-seqs '{long}': not a whole number; assumed 2"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("8192", 8192), ("8k", 8000), ("8K", 8192), ("1m", 10**6), ("1M", 2**20), ("2g", 2 * 10**9)]
    + [("1G", 2**30), (" 16 ", 16), ("1.5k", 1500), ("1.5", None), ("0.1k", 100), ("x", None), ("8kk", None)],
)
def test_human_int(value, expected):
    assert human_int(value) == expected


@pytest.mark.parametrize(
    ("token", "flag"), [("-1", False), ("-1.5", False), ("-", False), ("-tp", True), ("--x", True), ("x", False)]
)
def test_is_flag(token, flag):
    assert is_flag(token) is flag


def test_server_command_forms():
    assert server_command(["vllm", "serve", "o/m", "--port", "1"], image_is_server=False).args == ["o/m", "--port", "1"]
    python = server_command(
        ["A=1", "python3", "-m", "vllm.entrypoints.openai.api_server", "--x"], image_is_server=False
    )
    assert (python.args, python.env) == (["--x"], ["A=1"])
    assert server_command(["--model", "o/m"], image_is_server=True).args == ["--model", "o/m"]
    assert server_command(["--model", "o/m"], image_is_server=False).args is None
    login = server_command(["/bin/bash", "-lc", "cd /x; B=2 vllm serve o/m"], image_is_server=False)
    assert (login.args, login.env) == (["o/m"], ["B=2"])
    assert login.notes == [("shell step 'cd /x'", "modelctl runs vLLM only; bake other steps into the image")]
    split = server_command(["sh", "-c", "vllm", "serve", "o/m"], image_is_server=False)
    assert split.args == ["o/m"], "a command string split by compose after `sh -c` is one script"
    broken = server_command(["sh", "-c", "vllm serve 'o/m"], image_is_server=False)
    assert broken.args is None and broken.notes == [
        ("shell script", "cannot be split like a shell would (No closing quotation)")
    ]
    assert server_command(["sh", "-x", "run.sh"], image_is_server=False).args is None


def test_vllm_args_reading():
    args = VllmArgs(["o/m", "-O3", "-tp=2", "-q", "awq", "--seed", "-1", "--served-model-name", "a", "b", "--x"])
    assert args.positional_model == "o/m"
    assert args.items == [
        ("-O3", None, ["-O3"]),
        ("-tp", "2", ["-tp=2"]),
        ("-q", "awq", ["-q", "awq"]),
        ("--seed", "-1", ["--seed", "-1"]),
        ("--served-model-name", "a", ["--served-model-name", "a"]),
        ("--served-model-name", "b", ["b"]),
        ("--x", None, ["--x"]),
    ]
    late = VllmArgs(["--x", "1", "stray"])
    assert (late.positional_model, late.positionals) == (None, ["stray"])


def test_profile_names_and_unique_names():
    assert profile_name("VLLM-Qwen") == "qwen"
    assert profile_name("vllm") == "vllm"
    assert profile_name("___") == "model"
    assert profile_name("a" * 70) == "a" * 63
    assert profile_name("x" * 62 + "-vllm-y") == "x" * 62
    assert unique_name("a", {"a", "a-2"}) == "a-3"
    assert unique_name("b" * 63, {"b" * 63}) == "b" * 61 + "-2"
    assert unique_name("c", set()) == "c"


def test_dotenv():
    text = "# comment\n\nexport A=1\nB = 'two words'\nC=\"q\"\nD=x # note\nE=x#not-a-note\nnoequals\n F= \n"
    assert parse_dotenv(text) == {"A": "1", "B": "two words", "C": "q", "D": "x", "E": "x#not-a-note", "F": ""}
    assert parse_dotenv("G='\n") == {"G": "'"}


def test_the_dotenv_beside_the_file_and_only_that(tmp_path):
    compose = tmp_path / "compose.yaml"
    compose.write_text("services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model ${MODEL}\n")
    assert dotenv_beside(compose) == {}
    (tmp_path / ".env").mkdir()
    assert dotenv_beside(compose) == {}, "a directory is no .env"
    (tmp_path / ".env").rmdir()
    (tmp_path / ".env").write_text("MODEL=org/from-dotenv\n")
    result = import_compose_file(compose, gpu_total_gib=10.0)
    assert result.source == str(compose) and result.gpu_total_gib == 10.0
    assert result.imported[0].profile.model == "org/from-dotenv"


def imported(tmp_path: Path, text: str | None = None):
    text = text or "services:\n  demo:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model org/demo\n"
    return import_compose(text, gpu_total_gib=12.0, source="compose.yaml")


def test_written_files_are_the_rendered_profiles_mode_0644_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    result = imported(tmp_path)
    assert write_profiles(result, out, force=False) == [out / "demo.yaml"]
    assert (out / "demo.yaml").read_text() == render_profile(result.imported[0], result)
    assert stat.S_IMODE((out / "demo.yaml").stat().st_mode) == 0o644
    assert sorted(p.name for p in out.iterdir()) == ["demo.yaml"]


def test_an_existing_file_is_refused_without_force_and_replaced_with_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "demo.yml").write_text("old")
    result = imported(tmp_path)
    assert planned_files(result, out) == [out / "demo.yml"], "an existing NAME.yml is the one replaced"
    with pytest.raises(UsageError) as caught:
        write_profiles(result, out, force=False)
    assert caught.value.message == f"would overwrite {out / 'demo.yml'}"
    assert caught.value.hint == "pass --force to replace, or --out another directory"
    assert write_profiles(result, out, force=True) == [out / "demo.yml"]
    assert (out / "demo.yml").read_text().startswith("# Imported by `modelctl import-compose`")
    (out / "demo.yaml").write_text("both")
    assert planned_files(result, out) == [out / "demo.yaml"]


def test_a_target_that_is_not_a_file_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / "demo.yaml").mkdir(parents=True)
    with pytest.raises(UsageError) as caught:
        write_profiles(imported(tmp_path), out, force=True)
    assert caught.value.message == f"{out / 'demo.yaml'} exists and is not a regular file"
    assert caught.value.hint == "--out another directory"


def test_a_name_a_neighbour_claims_is_refused_naming_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.yaml").write_text(
        "name: other\nmodel: o/x\nimage: vllm/vllm-openai:v0.11.1\nvram_gib: 4\nmax_model_len: 4096\n"
        "max_num_seqs: 2\naliases: [org/demo]\n"
    )
    (out / "broken.yaml").write_text("name: [unclosed\n")  # an invalid neighbour is skipped
    (out / ".hidden.yaml").write_text("name: demo\n")
    (out / "notes.txt").write_text("name: demo\n")
    with pytest.raises(UsageError) as caught:
        write_profiles(imported(tmp_path), out, force=False)
    assert caught.value.message == f"service 'demo': name 'org/demo' is already used by {out / 'other.yaml'}"
    assert caught.value.hint == "import into another directory (--out), or rename the service in the compose file"


def test_two_imported_services_claiming_one_name_are_refused(tmp_path):
    result = imported(tmp_path)
    twin = imported(tmp_path).imported[0]
    result.imported.append(twin)
    with pytest.raises(UsageError) as caught:
        write_profiles(result, tmp_path / "out", force=False)
    assert caught.value.message == "service 'demo': name 'demo' is already used by the imported service 'demo'"


def test_an_out_directory_that_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError) as caught:
        write_profiles(imported(tmp_path), tmp_path / "file" / "out", force=False)
    assert caught.value.message == f"cannot create {tmp_path / 'file' / 'out'}: Not a directory"


def test_a_failed_rename_says_what_was_written_before(tmp_path, monkeypatch):
    text = (
        "services:\n  a:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model org/a\n"
        "  b:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model org/b\n"
    )
    out = tmp_path / "out"
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr("modelctl.compose_import.os.replace", replace)
    with pytest.raises(UsageError) as caught:
        write_profiles(imported(tmp_path, text), out, force=False)
    assert caught.value.message == f"cannot write {out / 'b.yaml'}: No space left on device"
    assert caught.value.hint == f"written before it: {out / 'a.yaml'}"
    assert sorted(p.name for p in out.iterdir()) == ["a.yaml"], "no temporary file left"


def test_a_failed_temporary_write_writes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("modelctl.compose_import.tempfile.mkstemp", full)
    with pytest.raises(UsageError) as caught:
        write_profiles(imported(tmp_path), out, force=False)
    assert caught.value.message == f"cannot write into {out}: No space left on device: nothing written"
    assert list(out.iterdir()) == []


# --- safe_yaml ------------------------------------------------------------------------------


def test_yaml_refusals_name_the_source_the_line_and_what_to_do():
    with pytest.raises(UsageError) as anchor:
        load_yaml("a: 1\nb: &x 2\n", source="p.yaml")
    assert anchor.value.message == (
        "p.yaml: line 2: YAML anchor &x is not accepted (anchors and aliases can expand a small file into gigabytes)"
    )
    assert anchor.value.hint == "write the values out in full instead of using &anchors and *aliases"
    with pytest.raises(UsageError) as bad:
        load_yaml("a: [1\n", source="p.yaml")
    assert bad.value.message.startswith("p.yaml: not valid YAML: while parsing a flow sequence")
    assert "\n" not in bad.value.message and bad.value.hint == "fix the YAML syntax"
    assert load_yaml("", source="p.yaml") is None
    assert load_yaml("a: &x [1, 2]\nb: *x\n", source="c.yaml", aliases=True) == {"a": [1, 2], "b": [1, 2]}


def test_alias_expansion_is_counted_and_refused_past_the_limit():
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]\n"
    # root 1 + a (1 + 3) + b (1 + 3 x 4) + 2 keys = 1 + 4 + 13 + 2 = 20 values
    assert load_yaml(text, source="c.yaml", aliases=True, max_nodes=20) == {"a": [1, 2, 3], "b": [[1, 2, 3]] * 3}
    with pytest.raises(UsageError) as caught:
        load_yaml(text, source="c.yaml", aliases=True, max_nodes=19)
    assert caught.value.message == (
        "c.yaml: its aliases expand to more than 19 values (line 1): a 'billion laughs' file?"
    )
    assert caught.value.hint == "write the values out, or use fewer nested *aliases"


def test_text_files_are_read_within_their_limit_as_utf8(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_bytes(b"x" * 10)
    assert read_text(path, max_bytes=10) == "x" * 10
    with pytest.raises(UsageError) as big:
        read_text(path, max_bytes=9)
    assert (big.value.message, big.value.hint) == (f"{path}: larger than the 9-byte limit", "is it the right file?")
    path.write_bytes(b"ok\xff")
    with pytest.raises(UsageError) as binary:
        read_text(path)
    assert (binary.value.message, binary.value.hint) == (f"{path}: not UTF-8 text (byte 2)", "save it as UTF-8")
    with pytest.raises(UsageError) as missing:
        read_text(tmp_path / "nope.yaml")
    assert missing.value.message == f"cannot read {tmp_path / 'nope.yaml'}: No such file or directory"
    path.write_text("k: v\n")
    assert load_yaml_file(path) == {"k": "v"}


def test_quoting_values_on_one_line():
    assert short_repr("a" * 5, limit=4) == "'aaa... (7 characters)"
    assert short_repr("abc") == "'abc'"
    assert short_repr(["x"]) == "['x']"
    assert one_line("a\nb\x1bc\u2028d") == "a\\nb\\x1bc\\u2028d"
    assert one_line("abcdef", 3) == "abc... (6 characters)"
    assert one_line("abcdef", None) == "abcdef"


def test_an_alias_without_aliases_allowed_is_refused_as_an_alias_and_a_long_anchor_is_cut():
    with pytest.raises(UsageError) as alias:
        load_yaml("a: *x\n", source="p.yaml")
    assert alias.value.message == (
        "p.yaml: line 1: YAML alias *x is not accepted (anchors and aliases can expand a small file into gigabytes)"
    )
    long = "n" * 70
    with pytest.raises(UsageError) as anchor:
        load_yaml(f"a: &{long} 1\n", source="p.yaml")
    assert f"YAML anchor &{'n' * 60}... (70 characters) is not accepted" in anchor.value.message


def test_a_recursive_alias_and_a_deep_document_are_refused_saying_what_to_do():
    with pytest.raises(UsageError) as recursive:
        load_yaml("a: &a [*a]\n", source="c.yaml", aliases=True)
    assert (recursive.value.message, recursive.value.hint) == (
        "c.yaml: line 1: an alias refers to a value that contains it",
        "write the values out instead of using a recursive *alias",
    )
    with pytest.raises(UsageError) as deep:
        load_yaml("[" * 5000, source="c.yaml")
    assert (deep.value.message, deep.value.hint) == ("c.yaml: YAML nested too deeply", "flatten the document")


def test_a_syntax_error_is_one_line_with_spaces_for_its_line_breaks():
    with pytest.raises(UsageError) as bad:
        load_yaml("a: [1\n", source="p.yaml")
    assert bad.value.message == (
        'p.yaml: not valid YAML: while parsing a flow sequence   in "<unicode string>", line 1, column 4:     '
        "a: [1        ^ expected ',' or ']', but got '<stream end>'   in \"<unicode string>\", line 2, column 1:"
        "          ^"
    )


def test_yaml_text_of_exactly_one_mib_is_read_one_byte_more_is_not():
    assert load_yaml("#" + "x" * ((1 << 20) - 1), source="big.yaml") is None
    with pytest.raises(UsageError) as caught:
        load_yaml("#" + "x" * (1 << 20), source="big.yaml")
    assert (caught.value.message, caught.value.hint) == (
        "big.yaml: 1048577 bytes is over the 1048576-byte limit for YAML",
        "is it the right file?",
    )


def test_load_yaml_file_passes_its_options_on(tmp_path):
    from modelctl.errors import ProfileError

    path = tmp_path / "c.yaml"
    path.write_text("a: &a [1, 2]\nb: *a\n")
    with pytest.raises(UsageError, match=r"c\.yaml: line 1: YAML anchor &a is not accepted"):
        load_yaml_file(path)
    assert load_yaml_file(path, aliases=True) == {"a": [1, 2], "b": [1, 2]}
    with pytest.raises(UsageError, match="expand to more than 3 values"):
        load_yaml_file(path, aliases=True, max_nodes=3)
    with pytest.raises(ProfileError) as typed:
        load_yaml_file(path, error=ProfileError)
    assert typed.value.message.startswith(f"{path}: line 1: YAML anchor &a")


def test_one_line_keeps_printable_text_and_cuts_only_past_the_limit():
    assert one_line("é\\ ok") == "é\\ ok"
    assert one_line("abc", 3) == "abc"
