"""What looks like a credential, and how to keep it out of everything modelctl prints or writes.

Two tests, used together everywhere:
- by NAME: an environment variable, flag or `KEY=VALUE` word whose name says it holds a
  credential (`HF_TOKEN`, `WANDB_API_KEY`, `--api-key`, `--hf-token`, `DB_PASSWORD`, `OPENAI_KEY`),
  but not `MAX_TOKENS`, `--tokenizer` or `--max-num-batched-tokens`;
- by VALUE: text that has the shape of a well-known credential anywhere in it (Hugging Face
  `hf_...`, OpenAI-style `sk-...`, GitHub `ghp_...` / `github_pat_...`, GitLab `glpat-...`, Slack
  `xox?-...`, AWS `AKIA...`, Google `AIza...`, a JWT, a PEM private key, or a URL with a password
  `scheme://user:password@host`).

`mask_env` is the rule for showing a profile's environment (show, list --json, GET /api/profiles):
every name is kept; a value is replaced by `***` when its name or the value itself looks like a
credential, and shown as it is otherwise (`VLLM_USE_V1=1` stays readable). Masking every value
would hide what users need to check; masking none leaks tokens. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

# Name parts, between `_`/`-` separators or the ends: HF_TOKEN, hf-token, API_KEY, APIKEY, ...
# `KEY` alone only as the last part (OPENAI_KEY), so KEY_FILE / --ssl-keyfile stay readable.
SECRET_NAME = re.compile(
    r"(^|[_-])(TOKEN|SECRET|PASSWORD|PASSWD|PASS|API[_-]?KEY|ACCESS[_-]?KEY|SECRET[_-]?KEY|"
    r"CREDENTIALS?|PRIVATE[_-]?KEY|AUTH)([_-]|$)|(^|[_-])KEY$",
    re.IGNORECASE,
)

_TOKEN_SHAPES = (
    r"hf_[A-Za-z0-9]{20,}",
    r"sk-[A-Za-z0-9_-]{16,}",
    r"gh[pousr]_[A-Za-z0-9]{20,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"glpat-[A-Za-z0-9_-]{20,}",
    r"xox[abprs]-[A-Za-z0-9-]{10,}",
    r"AKIA[0-9A-Z]{16}",
    r"AIza[0-9A-Za-z_-]{35}",
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
)
# A credential-shaped token inside any text (not in the middle of a longer word).
SECRET_IN_TEXT = re.compile(r"(?<![A-Za-z0-9_])(?:" + "|".join(_TOKEN_SHAPES) + r")")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s:@]*:[^/\s@]+@")
# NAME=value, NAME: value, --name value, --name=value where the name looks like a credential.
_NAMED = re.compile(
    r"(?P<name>(?<![A-Za-z0-9_-])-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)(?P<sep>\s*[=:]\s*|\s+)(?P<value>[^\s'\"`,;)\]}]+)"
)


def is_secret_name(name: str) -> bool:
    """True for a variable or flag name that says it holds a credential (`--api-key`, `HF_TOKEN`)."""
    return bool(SECRET_NAME.search(name.lstrip("-")))


def is_secret_value(value: str) -> bool:
    """True when the text holds something shaped like a credential, anywhere in it."""
    return bool(SECRET_IN_TEXT.search(value) or _PEM.search(value) or _URL_PASSWORD.search(value))


def looks_secret(name: str, value: str | None) -> bool:
    return is_secret_name(name) or (value is not None and is_secret_value(value))


def redact(text: str) -> str:
    """`text` with every credential replaced by `***`: token-shaped words, URL passwords, PEM keys,
    and the value after a secret-looking name (`HF_TOKEN=x`, `api_key: x`, `--hf-token x`)."""
    text = _PEM.sub(MASK, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    text = SECRET_IN_TEXT.sub(MASK, text)

    def named(match: re.Match) -> str:
        name = match.group("name")
        bare = name.lstrip("-")
        # A space separates a flag from its value; for a bare word only `=` or `:` does.
        spaced = match.group("sep").strip() == ""
        if match.group("value") == MASK or not is_secret_name(bare) or (spaced and not name.startswith("-")):
            return match.group(0)
        return f"{name}{match.group('sep')}{MASK}"

    return _NAMED.sub(named, text)


def redact_words(words: Iterable[str]) -> list[str]:
    """Words of a command line for a report: a credential word, the value of `KEY=VALUE` with a
    secret name, and the word after a secret-named flag become `***`."""
    shown: list[str] = []
    for word in words:
        name, sep, value = word.partition("=")
        after_secret_flag = bool(shown) and shown[-1].startswith("-") and is_secret_name(shown[-1])
        if after_secret_flag or (is_secret_value(word) and not sep):
            shown.append(MASK)
        elif sep and (is_secret_name(name) or is_secret_value(value)):
            shown.append(f"{name}={MASK}")
        else:
            shown.append(redact(word))
    return shown


def mask_env(env: dict[str, str]) -> dict[str, str]:
    """Every name kept; values whose name or content looks like a credential shown as `***`."""
    return {name: MASK if looks_secret(name, value) else value for name, value in env.items()}
