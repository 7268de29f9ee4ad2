"""Reading the commands a shell script runs, as a POSIX shell would split them."""

from __future__ import annotations

import pytest

from gastownd.core.command_words import simple_commands


def commands(script: str) -> list[list[str]]:
    return [[w.text for w in words] for words in simple_commands(script)]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("cd d && bd close x", [["cd", "d"], ["bd", "close", "x"]]),
        ("a; b || c | d & e", [["a"], ["b"], ["c"], ["d"], ["e"]]),
        ("(cd d && bd close x) 2>&1 | tail", [["cd", "d"], ["bd", "close", "x"], ["tail"]]),
        ("{ bd close q; }", [["bd", "close", "q"]]),
        ("bash -c 'a x; b y'", [["a", "x"], ["b", "y"]]),
        ('sh -ec "cd /r && b"', [["cd", "/r"], ["b"]]),
        ("bash -o pipefail -c 'a'", [["a"]]),
        ("timeout -s KILL 30 env -i A=1 B=2 nice -n 5 b c", [["b", "c"]]),
        ("sudo -u bob command b c", [["b", "c"]]),
        ("X=1 Y='2 3' b c", [["b", "c"]]),
        ("if b c; then d; else e; fi", [["b", "c"], ["d"], ["e"]]),
        ("b c \\\n  d", [["b", "c", "d"]]),
        ("b 'single; quoted' \"double && quoted\"", [["b", "single; quoted", "double && quoted"]]),
        ("b $'ansi\\tc'", [["b", "ansi\tc"]]),
        ('echo "b close x"', [["echo", "b close x"]]),
        ("ls # b c d", [["ls"]]),
        ("b x >out 2>/dev/null &>log <in", [["b", "x"]]),
        ("b x>out", [["b", "x"]]),
        ("cat <<EOF\nnot a command\nEOF\nb", [["cat"], ["b"]]),
        ("cat <<-'EOF'\n\tnot\n\tEOF\nb", [["cat"], ["b"]]),
        ("bash <<'EOF'\nb inside\nEOF", [["b", "inside"]]),
        ("echo $(b inner)", [["echo", ""], ["b", "inner"]]),
        ("echo `b inner`", [["echo", ""], ["b", "inner"]]),
        ("b 'unterminated", [["b", "unterminated"]]),
    ],
)
def test_simple_commands(script: str, expected: list[list[str]]) -> None:
    assert commands(script) == expected


def test_expanded_words_are_not_literal() -> None:
    [words] = simple_commands('b $ID "${OTHER}" plain')
    assert [(w.text, w.literal) for w in words] == [
        ("b", True),
        ("$ID", False),
        ("${OTHER}", False),
        ("plain", True),
    ]


def test_nesting_is_bounded() -> None:
    script = "b"
    for _ in range(20):
        script = f"bash -c {script!r}".replace('"', "'")
    assert len(commands(script)) <= 1
