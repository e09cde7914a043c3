"""`import-compose` against hostile or careless input (issue 10, "Profiles and import-compose"):
alias bombs, huge files, the shell's secrets, service names that try to write YAML, and failures
half-way through writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from modelctl import compose_import
from modelctl.compose_import import Dropped, import_compose, import_compose_file, write_profiles
from modelctl.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
HF = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
SHELL_SECRET = "correct-horse-battery-staple"  # not shaped like a token: only where it comes from betrays it
NOT_IN_DOTENV = (
    "is not set in the .env beside the compose file (the shell's environment is never read): "
    "left as written; fill it in"
)
KEYS = [
    "name",
    "model",
    "image",
    "served_model_name",
    "vram_gib",
    "max_model_len",
    "max_num_seqs",
    "vllm_args",
    "env",
    "port",
]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "MODELCTL_GPU_TOTAL_GIB": "12"}
    return subprocess.run(
        [sys.executable, "-m", "modelctl", *args],
        env={**full, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def everything_in(directory: Path) -> str:
    return "".join(p.read_text() for p in directory.iterdir())


BOMB_COMPOSE = """\
x-lol0: &lol0 "lol"
x-lol1: &lol1 [*lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0]
x-lol2: &lol2 [*lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1]
x-lol3: &lol3 [*lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2]
x-lol4: &lol4 [*lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3]
x-lol5: &lol5 [*lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4]
x-lol6: &lol6 [*lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5]
services:
  m:
    image: vllm/vllm-openai:v0.11.1
    command: --model org/m
    environment: *lol6
"""


# --- YAML ------------------------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_fast(tmp_path: Path) -> None:
    assert len(BOMB_COMPOSE.encode()) == 589
    started = time.monotonic()
    with pytest.raises(UsageError) as caught:
        import_compose(BOMB_COMPOSE, gpu_total_gib=12, source="bomb/docker-compose.yml")
    assert time.monotonic() - started < 1.0
    assert caught.value.message == (
        "bomb/docker-compose.yml: its aliases expand to more than 100000 values (line 7): a 'billion laughs' file?"
    )

    path = tmp_path / "docker-compose.yml"
    path.write_text(BOMB_COMPOSE)
    done = cli("import-compose", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "a 'billion laughs' file?" in done.stderr
    assert files_in(tmp_path / "out") == []


def test_a_compose_file_over_1_mib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(
        "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model org/m\n" + "# padding\n" * 110_000
    )
    with pytest.raises(UsageError) as caught:
        import_compose_file(path, gpu_total_gib=12)
    assert caught.value.message == f"{path}: larger than the 1048576-byte limit"
    done = cli("import-compose", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "1048576-byte limit" in done.stderr
    assert files_in(tmp_path / "out") == []


# --- variables and secrets -----------------------------------------------------------------------

SECRET_COMPOSE = """\
services:
  m:
    image: vllm/vllm-openai:${TAG:-v0.11.1}
    command: --model ${MODEL} --chat-template-content-format ${SECRET} --dtype ${DTYPE}
    environment:
      SETTING: ${SECRET}
      FROM_DOTENV: ${PLAIN}
"""


def test_the_shells_environment_never_fills_a_variable(tmp_path: Path) -> None:
    compose = tmp_path / "app" / "docker-compose.yml"
    compose.parent.mkdir()
    compose.write_text(SECRET_COMPOSE)
    (compose.parent / ".env").write_text("MODEL=org/from-dotenv\nPLAIN=dotenv-value\n")
    out = tmp_path / "out"
    shell = {"SECRET": SHELL_SECRET, "MODEL": "org/from-shell", "DTYPE": "half", "TAG": "v9"}
    done = cli("import-compose", str(compose), "--out", str(out), "--json", env=shell)
    assert done.returncode == 0, done.stderr
    assert SHELL_SECRET not in done.stdout + done.stderr + everything_in(out)

    written = yaml.safe_load((out / "m.yaml").read_text())
    assert written["model"] == "org/from-dotenv"
    assert written["image"] == "vllm/vllm-openai:v0.11.1"
    assert written["vllm_args"] == ["--chat-template-content-format", "${SECRET}", "--dtype", "${DTYPE}"]
    assert written["env"] == {"SETTING": "${SECRET}", "FROM_DOTENV": "dotenv-value"}
    dropped = json.loads(done.stdout)["dropped"]
    assert dropped == [
        {"service": "m", "what": "${SECRET} in command", "why": f"variable SECRET {NOT_IN_DOTENV}"},
        {"service": "m", "what": "${DTYPE} in command", "why": f"variable DTYPE {NOT_IN_DOTENV}"},
        {"service": "m", "what": "${SECRET} in environment SETTING", "why": f"variable SECRET {NOT_IN_DOTENV}"},
    ]

    text = cli("import-compose", str(compose), "--out", str(tmp_path / "out2"), env=shell).stdout
    assert f"  not carried over: ${{SECRET}} in command: variable SECRET {NOT_IN_DOTENV}" in text.splitlines()
    assert SHELL_SECRET not in text


def test_the_file_reader_ignores_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET", SHELL_SECRET)
    monkeypatch.setenv("MODEL", "org/from-shell")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(SECRET_COMPOSE)
    result = import_compose_file(compose, gpu_total_gib=12)
    profile = result.imported[0].profile
    assert profile.model == "${MODEL}"
    assert profile.env == {"SETTING": "${SECRET}", "FROM_DOTENV": "${PLAIN}"}
    assert [d.what for d in result.dropped] == [
        "${MODEL} in command",
        "${SECRET} in command",
        "${DTYPE} in command",
        "${SECRET} in environment SETTING",
        "${PLAIN} in environment FROM_DOTENV",
    ]


def test_a_dotenv_variable_that_looks_secret_is_left_as_written() -> None:
    result = import_compose(
        "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n"
        "    command: --model org/m --chat-template ${TEMPLATE} --served-model-name ${DB_PASSWORD}\n",
        gpu_total_gib=12,
        variables={"TEMPLATE": HF, "DB_PASSWORD": "hunter2"},
    )
    profile = result.imported[0].profile
    assert profile.vllm_args == ["--chat-template", "${TEMPLATE}"]
    assert profile.served_model_name == "${DB_PASSWORD}"
    secret_why = (
        "looks like a secret: left as written, never filled in (modelctl passes HF_TOKEN from its own environment)"
    )
    assert result.dropped == [
        Dropped("m", "${TEMPLATE} in command", f"variable TEMPLATE {secret_why}"),
        Dropped("m", "${DB_PASSWORD} in command", f"variable DB_PASSWORD {secret_why}"),
    ]


def test_an_unset_variable_is_reported_by_name() -> None:
    result = import_compose(
        "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n"
        "    command: --model org/${ORG_MODEL} --dtype ${D:-half}\n",
        gpu_total_gib=12,
    )
    assert result.imported[0].profile.model == "org/${ORG_MODEL}"
    assert result.imported[0].profile.vllm_args == ["--dtype", "half"]  # the file's own default
    assert result.dropped == [Dropped("m", "${ORG_MODEL} in command", f"variable ORG_MODEL {NOT_IN_DOTENV}")]


def test_an_entrypoint_that_cannot_be_split_writes_no_token(tmp_path: Path) -> None:
    result = import_compose(
        "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n"
        f"    entrypoint: 'sh -c \"huggingface-cli login --token {HF} && vllm serve'\n"
        "    command: vllm serve org/m\n",
        gpu_total_gib=12,
    )
    assert result.dropped == [
        Dropped(
            "m",
            "entrypoint 'sh -c \"huggingface-cli login --token *** && vllm serve'",
            "cannot be split like a shell would (No closing quotation)",
        ),
    ]
    out = tmp_path / "out"
    write_profiles(result, out, force=False)
    text = (out / "m.yaml").read_text()
    assert HF not in text
    assert "#   - entrypoint 'sh -c \"huggingface-cli login --token *** && vllm serve': cannot be split" in text
    assert HF not in json.dumps(compose_import.result_json(result, [out / "m.yaml"]))
    assert HF not in "\n".join(compose_import.result_lines(result, [out / "m.yaml"]))


def test_a_rendered_file_with_a_credential_is_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = import_compose(
        "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n    command: --model org/m\n", gpu_total_gib=12
    )
    real = compose_import.render_profile
    monkeypatch.setattr(compose_import, "render_profile", lambda item, res: real(item, res) + f"# {HF}\n")
    with pytest.raises(UsageError) as caught:
        write_profiles(result, tmp_path / "out", force=False)
    assert caught.value.message == (
        "the profile for service 'm' would contain something shaped like a credential: nothing written"
    )
    assert files_in(tmp_path / "out") == []


# --- names ---------------------------------------------------------------------------------------


def test_a_newline_in_a_service_name_cannot_inject_a_key(tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n"
        '  "m\\ninjected: true\\nport: 1\\u2028vram_gib: 99 #":\n'
        "    image: vllm/vllm-openai:v0.11.1\n    command: --model org/m\n"
    )
    out = tmp_path / "out"
    done = cli("import-compose", str(compose), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert files_in(out) == ["m-injected-true-port-1-vram-gib-99.yaml"]
    text = (out / "m-injected-true-port-1-vram-gib-99.yaml").read_text()
    written = yaml.safe_load(text)
    assert list(written) == KEYS
    assert (written["name"], written["port"], written["vram_gib"]) == ("m-injected-true-port-1-vram-gib-99", 8000, 10.8)
    assert text.splitlines()[0] == (
        "# Imported by `modelctl import-compose` from "
        f"{compose}, service 'm\\ninjected: true\\nport: 1\\u2028vram_gib: 99 #'."
    )
    header = text.split("\nname: ", 1)[0].splitlines()
    assert all(line.startswith("#") for line in header)
    assert "\u2028" not in text
    assert done.stdout.splitlines()[0] == (
        f"wrote {out}/m-injected-true-port-1-vram-gib-99.yaml from service "
        "'m\\ninjected: true\\nport: 1\\u2028vram_gib: 99 #' (vram_gib 10.8, estimated)"
    )


def test_a_terminal_escape_in_a_name_is_printed_escaped() -> None:
    result = import_compose(
        "services:\n  \"\\e[2Jredis\": {image: 'redis:7'}\n"
        "  m: {image: 'vllm/vllm-openai:v0.11.1', command: '--model o/m'}\n",
        gpu_total_gib=12,
    )
    assert compose_import.result_lines(result, [Path("m.yaml")])[-1] == "ignored (not vLLM servers): \\x1b[2Jredis"


def test_two_services_that_give_one_name(tmp_path: Path) -> None:
    result = import_compose(
        "services:\n"
        "  vllm-qwen: {image: 'vllm/vllm-openai:v0.11.1', command: '--model org/q --max-model-len 4096'}\n"
        "  qwen_vllm: {image: 'vllm/vllm-openai:v0.11.1', command: 'vllm serve org/q --served-model-name org/q q2'}\n"
        "  QWEN: {image: 'vllm/vllm-openai:v0.11.1', command: '--model org/q3'}\n",
        gpu_total_gib=12,
    )
    names = [(i.service, i.profile.name, i.profile.served_model_name, i.profile.aliases) for i in result.imported]
    assert names == [
        ("vllm-qwen", "qwen", "org/q", []),
        ("qwen_vllm", "qwen-2", "qwen-2", ["q2"]),
        ("QWEN", "qwen-3", "org/q3", []),
    ]
    assert result.dropped == [
        Dropped(
            "qwen_vllm",
            "served model name org/q",
            "service 'vllm-qwen' of this file already serves it: clients reach this profile as qwen-2",
        ),
    ]
    out = tmp_path / "out"
    write_profiles(result, out, force=False)
    assert files_in(out) == ["qwen-2.yaml", "qwen-3.yaml", "qwen.yaml"]


def test_a_long_name_keeps_its_suffix_within_63_characters() -> None:
    service = "a" * 70
    result = import_compose(
        f"services:\n  {service}: {{image: 'vllm/vllm-openai:v0.11.1', command: '--model o/1'}}\n"
        f"  {service}b: {{image: 'vllm/vllm-openai:v0.11.1', command: '--model o/2'}}\n",
        gpu_total_gib=12,
    )
    assert [i.profile.name for i in result.imported] == ["a" * 63, "a" * 61 + "-2"]


# --- arguments -----------------------------------------------------------------------------------


def test_short_flags_and_a_flag_given_twice() -> None:
    result = import_compose(
        "services:\n  m:\n    image: vllm/vllm-openai:v0.11.1\n"
        "    command: --model org/m -tp 2 --max-model-len 1024 --dtype half --max-model-len=4096 -q awq\n",
        gpu_total_gib=12,
    )
    profile = result.imported[0].profile
    assert profile.vllm_args == ["-tp", "2", "--dtype", "half", "-q", "awq"]
    assert profile.max_model_len == 4096
    assert result.dropped == [Dropped("m", "--max-model-len 1024", "given again later as 4096; the last one counts")]


# --- all or nothing ------------------------------------------------------------------------------

TWO = """\
services:
  first: {image: 'vllm/vllm-openai:v0.11.1', command: '--model org/one'}
  second: {image: 'vllm/vllm-openai:v0.11.1', command: '--model org/two'}
"""


def test_a_second_profile_that_does_not_validate_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = import_compose(TWO, gpu_total_gib=12)
    real = compose_import.render_profile

    def render(item, res):
        text = real(item, res)
        return text.replace("max_num_seqs: 2", "max_num_seqs: two") if item.service == "second" else text

    monkeypatch.setattr(compose_import, "render_profile", render)
    out = tmp_path / "out"
    with pytest.raises(UsageError) as caught:
        write_profiles(result, out, force=False)
    assert caught.value.message.startswith("the profile for service 'second' does not read back as a valid profile: ")
    assert files_in(out) == []


def test_a_second_file_that_cannot_be_written_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = import_compose(TWO, gpu_total_gib=12)
    real = compose_import._write_temporary
    calls: list[str] = []

    def write(path: Path, text: str) -> Path:
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(compose_import, "_write_temporary", write)
    out = tmp_path / "out"
    with pytest.raises(UsageError) as caught:
        write_profiles(result, out, force=False)
    assert caught.value.message == f"cannot write into {out}: No space left on device: nothing written"
    assert calls == ["first.yaml", "second.yaml"]
    assert files_in(out) == []  # neither first.yaml nor a hidden temporary file


def test_written_files_read_back_as_the_imported_profiles(tmp_path: Path) -> None:
    result = import_compose(TWO, gpu_total_gib=12)
    out = tmp_path / "out"
    assert write_profiles(result, out, force=False) == [out / "first.yaml", out / "second.yaml"]
    assert files_in(out) == ["first.yaml", "second.yaml"]
    assert yaml.safe_load((out / "second.yaml").read_text())["model"] == "org/two"
    assert oct((out / "first.yaml").stat().st_mode & 0o777) == "0o644"


def test_a_directory_in_the_way_is_refused_before_writing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "second.yaml").mkdir(parents=True)
    with pytest.raises(UsageError) as caught:
        write_profiles(import_compose(TWO, gpu_total_gib=12), out, force=True)
    assert caught.value.message == f"{out}/second.yaml exists and is not a regular file"
    assert files_in(out) == ["second.yaml"]


def test_a_neighbour_profile_bomb_does_not_hang_the_name_check(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "bomb.yaml").write_text(BOMB_COMPOSE)
    started = time.monotonic()
    write_profiles(import_compose(TWO, gpu_total_gib=12), out, force=False)
    assert time.monotonic() - started < 2.0
    assert files_in(out) == ["bomb.yaml", "first.yaml", "second.yaml"]
