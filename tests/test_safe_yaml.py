"""YAML from files anyone may have written: no alias bombs, no huge files, short error messages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from modelctl.errors import ProfileError, UsageError
from modelctl.safe_yaml import load_yaml, load_yaml_file, one_line, short_repr

# The classic "billion laughs": 626 bytes that expand to 9**9 (387 million) strings.
BOMB = """\
lol0: &lol0 "lol"
lol1: &lol1 [*lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0, *lol0]
lol2: &lol2 [*lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1, *lol1]
lol3: &lol3 [*lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2, *lol2]
lol4: &lol4 [*lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3, *lol3]
lol5: &lol5 [*lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4, *lol4]
lol6: &lol6 [*lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5, *lol5]
lol7: &lol7 [*lol6, *lol6, *lol6, *lol6, *lol6, *lol6, *lol6, *lol6, *lol6]
lol8: &lol8 [*lol7, *lol7, *lol7, *lol7, *lol7, *lol7, *lol7, *lol7, *lol7]
"""


def test_the_bomb_is_about_600_bytes() -> None:
    assert len(BOMB.encode()) == 626  # 18 + 8 x 76


def test_a_profile_with_aliases_is_refused_at_the_first_anchor() -> None:
    started = time.monotonic()
    with pytest.raises(UsageError) as caught:
        load_yaml(BOMB, source="profiles/bomb.yaml")
    assert time.monotonic() - started < 1.0
    assert caught.value.message == (
        "profiles/bomb.yaml: line 1: YAML anchor &lol0 is not accepted "
        "(anchors and aliases can expand a small file into gigabytes)"
    )
    assert caught.value.hint == "write the values out in full instead of using &anchors and *aliases"


def test_an_alias_alone_is_refused_too() -> None:
    with pytest.raises(UsageError) as caught:
        load_yaml("a: 1\nb: *x\n", source="p.yaml")
    assert caught.value.message.startswith("p.yaml: ")  # PyYAML: "found undefined alias" or ours
    assert caught.value.exit_code == 2


def test_where_aliases_are_allowed_the_bomb_is_counted_not_expanded() -> None:
    started = time.monotonic()
    with pytest.raises(UsageError) as caught:
        load_yaml(BOMB, source="docker-compose.yml", aliases=True)
    assert time.monotonic() - started < 1.0
    assert caught.value.message == (
        "docker-compose.yml: its aliases expand to more than 100000 values (line 7): a 'billion laughs' file?"
    )
    assert caught.value.hint == "write the values out, or use fewer nested *aliases"


def test_anchors_and_merge_keys_within_the_cap_load() -> None:
    text = "x-common: &common {restart: always, ipc: host}\nservices:\n  a:\n    <<: *common\n    image: i\n"
    assert load_yaml(text, source="c.yml", aliases=True) == {
        "x-common": {"restart": "always", "ipc": "host"},
        "services": {"a": {"restart": "always", "ipc": "host", "image": "i"}},
    }
    with pytest.raises(UsageError):
        load_yaml(text, source="c.yml")  # a profile may not


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(UsageError) as caught:
        load_yaml("a: &a [1, *a]\n", source="r.yml", aliases=True)
    assert caught.value.message == "r.yml: line 1: an alias refers to a value that contains it"


def test_a_file_over_1_mib_is_refused_unparsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(UsageError) as caught:
        load_yaml_file(path)
    assert caught.value.message == f"{path}: larger than the 1048576-byte limit"
    with pytest.raises(UsageError) as caught:
        load_yaml(path.read_text(), source="big.yaml")
    assert caught.value.message == "big.yaml: 1048580 bytes is over the 1048576-byte limit for YAML"

    path.write_text("a: " + "x" * (1024 * 1024 - 10) + "\n")  # just under: read
    assert len(load_yaml_file(path)["a"]) == 1024 * 1024 - 10


def test_the_caller_chooses_the_error_class(tmp_path: Path) -> None:
    with pytest.raises(ProfileError):
        load_yaml("a: &x 1\n", source="p.yaml", error=ProfileError)
    with pytest.raises(ProfileError) as caught:
        load_yaml_file(tmp_path / "missing.yaml", error=ProfileError)
    assert caught.value.message == f"cannot read {tmp_path / 'missing.yaml'}: No such file or directory"


def test_not_utf8_and_too_deep_are_usage_errors(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: \xe9t\xe9\n")
    with pytest.raises(UsageError) as caught:
        load_yaml_file(path)
    assert caught.value.message == f"{path}: not UTF-8 text (byte 3)"
    with pytest.raises(UsageError) as caught:
        load_yaml("[" * 5000, source="deep.yaml", aliases=True)
    assert caught.value.message == "deep.yaml: YAML nested too deeply"


def test_a_syntax_error_quotes_little_and_masks_credentials() -> None:
    secret = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    with pytest.raises(UsageError) as caught:
        load_yaml(f"token: {secret}\n  bad: [\n" + "y" * 100_000, source="s.yml")
    message = caught.value.message
    assert secret not in message and "\n" not in message
    assert len(message) < 700


def test_short_repr_and_one_line() -> None:
    assert short_repr("abc") == "'abc'"
    assert short_repr("a" * 300) == "'" + "a" * 199 + "... (302 characters)"
    assert short_repr("x" * 198) == "'" + "x" * 198 + "'"  # exactly 200: whole
    assert short_repr("key hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789") == "'key ***'"
    assert one_line("evil\nname: x\u2028y\x1b[2J\t") == "evil\\nname: x\\u2028y\\x1b[2J\\t"
    assert one_line("b" * 250, 10) == "bbbbbbbbbb... (250 characters)"
