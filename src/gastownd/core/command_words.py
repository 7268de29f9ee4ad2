"""What commands a shell script runs: words of each simple command, no I/O.

Agents hand the Bash tool whole scripts, not single commands: ``cd d && bd close
x``, ``(cd d && bd close x)``, ``bash -c '…'``, ``{ …; }`` groups, several lines,
heredocs, ``VAR=value`` prefixes and wrappers (``env``, ``timeout 30``,
``sudo``, ``command``). :func:`simple_commands` reads such a script the way a
POSIX shell splits it and returns the simple commands it would run, each as
its words with the wrappers peeled off, recursing into ``sh -c`` scripts,
subshells, groups and command substitutions. Text that is only data is never
a command: quoted strings (``echo "bd close x"``), comments, heredoc bodies
(unless fed to a shell) and redirection targets.

A word that the shell would expand (``$ID``, ``$(…)``, globs are kept as
text) is marked :attr:`Word.literal` ``False``: its value is unknown here.
Reading never fails: an unterminated quote ends the script.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import msgspec

MAX_DEPTH: Final = 8
SHELLS: Final = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "mksh"})
# Reserved words and prefixes that may start a simple command without being it.
KEYWORDS: Final = frozenset(
    {"!", "{", "}", "(", ")", "if", "then", "else", "elif", "fi", "do", "done", "while", "until"}
)
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
_REDIRECT = re.compile(r"(\d*|\{[A-Za-z_][A-Za-z0-9_]*\})(<<<|<<-|<<|<>|<&|>&|>>|>\||<|>|&>>|&>)")
_OPERATORS: Final = ("&&", "||", ";;", "|&", ";", "|", "&", "(", ")")


class Word(msgspec.Struct, frozen=True):
    text: str
    # False when the shell would expand part of it ($VAR, $(...), `...`).
    literal: bool = True


class _Command(msgspec.Struct):
    words: list[Word] = msgspec.field(default_factory=list)
    heredocs: list[str] = msgspec.field(default_factory=list)


class _Reader(msgspec.Struct):
    """One pass over a script: words, operators, heredocs, nested scripts."""

    text: str
    pos: int = 0
    commands: list[_Command] = msgspec.field(default_factory=list)
    nested: list[str] = msgspec.field(default_factory=list)
    # Heredocs announced on the current line: (delimiter, strip tabs, owner).
    pending: list[tuple[str, bool, _Command]] = msgspec.field(default_factory=list)

    def run(self) -> None:
        current = _Command()
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t\r":
                self.pos += 1
            elif char == "\\" and text.startswith("\\\n", self.pos):
                self.pos += 2
            elif char == "\n":
                self.pos += 1
                current = self._end(current)
                self._read_heredocs()
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif redirect := _REDIRECT.match(text, self.pos):
                # Before operators: ``&>`` is a redirection, not ``&``.
                self.pos = redirect.end()
                while self.pos < len(text) and text[self.pos] in " \t":
                    self.pos += 1
                target = self._word()
                if redirect.group(2) in ("<<", "<<-") and target is not None:
                    self.pending.append((target.text, redirect.group(2) == "<<-", current))
            elif op := _operator_at(text, self.pos):
                self.pos += len(op)
                current = self._end(current)
            else:
                word = self._word()
                if word is not None:
                    current.words.append(word)
        self._end(current)

    def _end(self, command: _Command) -> _Command:
        if command.words:
            self.commands.append(command)
        return _Command()

    def _read_heredocs(self) -> None:
        text = self.text
        for delimiter, strip_tabs, owner in self.pending:
            body: list[str] = []
            while self.pos < len(text):
                end = text.find("\n", self.pos)
                end = len(text) if end < 0 else end
                line = text[self.pos : end]
                self.pos = end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
                body.append(line)
            owner.heredocs.append("\n".join(body))
        self.pending = []

    def _word(self) -> Word | None:
        """The word at ``pos`` (quotes removed), or None at an operator or the end."""
        text = self.text
        parts: list[str] = []
        literal = True
        start = self.pos
        while self.pos < len(text):
            char = text[self.pos]
            # Every operator starts with one of "&|;()", and each of them is one.
            if char in " \t\r\n" or (
                char in "&|;()" and not (char == "(" and parts and parts[-1] == "=")
            ):
                break
            if char in "<>" and self.pos > start:  # a redirection starts here
                break
            if char == "\\":
                if self.pos + 1 < len(text) and text[self.pos + 1] != "\n":
                    parts.append(text[self.pos + 1])
                self.pos += 2
            elif char == "'":
                end = text.find("'", self.pos + 1)
                end = len(text) if end < 0 else end
                parts.append(text[self.pos + 1 : end])
                self.pos = end + 1
            elif char == '"':
                literal &= self._double_quoted(parts)
            elif char == "$" and text.startswith("$'", self.pos):
                parts.append(self._ansi_c())
            elif self._substitution(char):
                literal = False
            elif char == "$" and self.pos + 1 < len(text) and text[self.pos + 1] not in " \t\n":
                literal = False
                parts.append(char)
                self.pos += 1
            else:
                parts.append(char)
                self.pos += 1
        if self.pos == start:
            return None
        return Word("".join(parts), literal)

    def _double_quoted(self, parts: list[str]) -> bool:
        text = self.text
        literal = True
        self.pos += 1
        while self.pos < len(text) and text[self.pos] != '"':
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text):
                following = text[self.pos + 1]
                if following in '$`"\\':
                    parts.append(following)
                elif following != "\n":
                    parts.append("\\" + following)
                self.pos += 2
            elif self._substitution(char):
                literal = False
            else:
                if char == "$":
                    literal = False
                parts.append(char)
                self.pos += 1
        self.pos += 1
        return literal

    def _substitution(self, char: str) -> bool:
        """Read a ``$( … )`` or a backquoted command at ``pos`` (its script is kept for
        reading as commands); False when there is none."""
        text = self.text
        if char == "$" and text.startswith("$(", self.pos) and not text.startswith("$((", self.pos):
            self.nested.append(self._balanced(self.pos + 2))
            return True
        if char == "`":
            end = text.find("`", self.pos + 1)
            end = len(text) if end < 0 else end
            self.nested.append(text[self.pos + 1 : end])
            self.pos = end + 1
            return True
        return False

    def _ansi_c(self) -> str:
        text = self.text
        out: list[str] = []
        self.pos += 2
        escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
        while self.pos < len(text) and text[self.pos] != "'":
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text):
                out.append(escapes.get(text[self.pos + 1], "\\" + text[self.pos + 1]))
                self.pos += 2
            else:
                out.append(char)
                self.pos += 1
        self.pos += 1
        return "".join(out)

    def _balanced(self, start: int) -> str:
        """The text of ``$( … )`` from ``start`` (just inside) to its closing parenthesis."""
        text = self.text
        depth = 1
        position = start
        while position < len(text):
            char = text[position]
            if char == "\\":
                position += 2
                continue
            if char == "'":
                end = text.find("'", position + 1)
                position = len(text) if end < 0 else end + 1
                continue
            if char == '"':
                position += 1
                while position < len(text) and text[position] != '"':
                    position += 2 if text[position] == "\\" else 1
                position += 1
                continue
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    self.pos = position + 1
                    return text[start:position]
            position += 1
        self.pos = len(text)
        return text[start:]


def _operator_at(text: str, position: int) -> str | None:
    for op in _OPERATORS:
        if text.startswith(op, position):
            return op
    return None


def simple_commands(script: str, *, depth: int = 0) -> list[list[Word]]:
    """The simple commands ``script`` runs, in order, wrappers and prefixes removed."""
    if depth > MAX_DEPTH:
        return []
    reader = _Reader(script)
    reader.run()
    found: list[list[Word]] = []
    for command in reader.commands:
        words = _unwrap(command.words)
        if not words:
            continue
        name = basename(words[0].text)
        if name in SHELLS:
            inline = _inline_script(words[1:])
            if inline is not None:
                found += simple_commands(inline, depth=depth + 1)
                continue
            reads_stdin = not any(w.text and not w.text.startswith("-") for w in words[1:])
            if command.heredocs and reads_stdin:
                for body in command.heredocs:
                    found += simple_commands(body, depth=depth + 1)
                continue
        found.append(words)
    for inner in reader.nested:
        found += simple_commands(inner, depth=depth + 1)
    return found


def option(args: Sequence[str], *names: str) -> str | None:
    """The value ``args`` give the first of ``names`` found: ``-m x`` or ``--message=x``."""
    for position, arg in enumerate(args):
        for name in names:
            if arg == name and position + 1 < len(args):
                return args[position + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


# ---------------------------------------------------------------- wrappers

# Wrapper → its options that take a value (the command follows the options).
_WRAPPER_VALUE_OPTIONS: Final[dict[str, frozenset[str]]] = {
    "sudo": frozenset({"-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U", "-T"}),
    "doas": frozenset({"-u", "-C"}),
    "env": frozenset({"-u", "-C", "--unset", "--chdir", "-S", "--split-string"}),
    "timeout": frozenset({"-s", "-k", "--signal", "--kill-after"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "-p", "--class", "--classdata"}),
    "stdbuf": frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}),
    "command": frozenset(),
    "builtin": frozenset(),
    "exec": frozenset({"-a"}),
    "nohup": frozenset(),
    "time": frozenset({"-f", "-o", "--format", "--output"}),
    "setsid": frozenset(),
    "chronic": frozenset(),
}
# Wrappers whose first operand is theirs, not the command's.
_WRAPPER_OPERANDS: Final[dict[str, int]] = {"timeout": 1}


def _unwrap(words: list[Word]) -> list[Word]:
    """Drop keywords, ``VAR=value`` prefixes and wrappers in front of the command."""
    position = 0
    while position < len(words):
        word = words[position].text
        if word in KEYWORDS or _ASSIGNMENT.match(word):
            position += 1
        elif basename(word) in _WRAPPER_VALUE_OPTIONS:
            position = _after_wrapper(words, position)
        else:
            break
    return words[position:]


def _after_wrapper(words: list[Word], position: int) -> int:
    name = basename(words[position].text)
    takes_value = _WRAPPER_VALUE_OPTIONS[name]
    position += 1
    while position < len(words):
        word = words[position].text
        if word == "--":
            position += 1
            break
        if word.startswith("-") and len(word) > 1:
            position += 2 if word in takes_value else 1
        elif name == "env" and _ASSIGNMENT.match(word):
            position += 1
        else:
            break
    return position + _WRAPPER_OPERANDS.get(name, 0)


def _inline_script(args: list[Word]) -> str | None:
    """The script of ``sh -c SCRIPT``-style arguments, else None."""
    position = 0
    wants_script = False
    while position < len(args):
        word = args[position].text
        if word in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            position += 2
            continue
        if word == "--":
            position += 1
            break
        if word.startswith("-") and len(word) > 1 and not word.startswith("--"):
            wants_script |= "c" in word[1:]
            position += 1
            continue
        if word.startswith("--"):
            position += 1
            continue
        break
    if wants_script and position < len(args):
        return args[position].text
    return None
