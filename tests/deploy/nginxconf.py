"""A small reader of nginx configuration files, for checking the proxy config in tests.

Owns parsing nginx's syntax (directives, blocks, quotes, comments) into ``Block`` trees and
choosing the ``location`` that serves a path the way nginx does (exact, then the longest
prefix unless a regex matches first). It knows nothing of the bridge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""\s*(?:(#[^\n]*)"""  # a comment
    r"""|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""  # a quoted word
    r"""|([{};])"""  # punctuation
    r"""|([^\s{};"']+))"""  # a bare word
)


@dataclass
class Block:
    """One directive; ``body`` holds the directives inside it when it is a block."""

    name: str
    args: list[str]
    body: list[Block] = field(default_factory=list)

    def children(self, name: str) -> list[Block]:
        return [d for d in self.body if d.name == name]

    def child(self, name: str) -> Block:
        [found] = self.children(name)
        return found

    def value(self, name: str) -> list[str]:
        """The arguments of the last ``name`` directive here; [] when there is none."""
        found = self.children(name)
        return found[-1].args if found else []


def _tokens(text: str) -> list[str]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip():
                raise ValueError(f"cannot read nginx config at {text[pos : pos + 30]!r}")
            break
        pos = match.end()
        comment, quoted, punct, word = match.groups()
        if comment:
            continue
        if quoted:
            tokens.append(quoted[1:-1])
        elif punct or word:
            tokens.append(punct or word)
    return tokens


def parse_nginx(text: str) -> Block:
    """The whole file as the body of a root ``Block`` named ``""``."""
    root = Block("", [])
    stack = [root]
    words: list[str] = []
    for token in _tokens(text):
        if token == ";":
            if not words:
                raise ValueError("empty directive")
            stack[-1].body.append(Block(words[0], words[1:]))
            words = []
        elif token == "{":
            if not words:
                raise ValueError("block without a name")
            block = Block(words[0], words[1:])
            stack[-1].body.append(block)
            stack.append(block)
            words = []
        elif token == "}":
            if words or len(stack) == 1:
                raise ValueError("unbalanced '}' or a directive without ';'")
            stack.pop()
        else:
            words.append(token)
    if words or len(stack) != 1:
        raise ValueError("unterminated directive or block")
    return root


def location_for(server: Block, path: str) -> Block | None:
    """The ``location`` of ``server`` that nginx would choose for ``path``."""
    prefix: Block | None = None
    prefix_len = -1
    for location in server.children("location"):
        if location.args[0] == "=" and location.args[1] == path:
            return location
        if location.args[0] in ("~", "~*", "="):
            continue
        modifier_less = location.args[-1]
        if path.startswith(modifier_less) and len(modifier_less) > prefix_len:
            prefix, prefix_len = location, len(modifier_less)
    if prefix is not None and prefix.args[0] == "^~":
        return prefix
    for location in server.children("location"):
        if location.args[0] in ("~", "~*"):
            flags = re.IGNORECASE if location.args[0] == "~*" else 0
            if re.search(location.args[1], path, flags):
                return location
    return prefix
