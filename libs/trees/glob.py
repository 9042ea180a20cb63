"""Glob over a tree with Pachyderm 1.7's pipeline rules (gobwas/glob, ``/`` separator).

``*`` and ``?`` stay within a name, ``**`` crosses ``/``; ``[abc]``, ``[a-z]``,
``[!a]`` (never matches ``/``), ``{a,b}`` and ``\\`` escapes. A pattern matches
files and directories; ``/`` matches the root. The walk is pruned segment by
segment: a literal name is looked up, a name with a literal prefix seeks to
it, and nothing is visited deeper than the pattern can reach.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass

from libs.api.internal import tree_pb2
from libs.bounds import check_glob
from libs.errors import InvalidArgument
from libs.objects import ObjectStore
from libs.trees.codec import load_dir
from libs.trees.model import Node, node_from_child
from libs.trees.pages import find_child, iter_children
from libs.trees.paths import ROOT, join, normalize, segments, sort_key
from libs.trees.read import root_entry
from libs.trees.stackless import Descend, flatten

_Found = tuple[str, Node]

_SPECIAL = "*?[{\\"


def is_glob(path: str) -> bool:
    """Whether ``path`` holds a glob's special characters (``* ? [ { \\``)."""
    return any(c in _SPECIAL for c in path)


@dataclass(frozen=True)
class _Segment:
    regex: re.Pattern[str]
    literal: str | None  # the whole segment when it has no special characters
    prefix: str  # literal text before the first special character
    deep: bool  # may match across "/" (contains ** or a "/" inside braces)


def compile_pattern(pattern: str) -> tuple[re.Pattern[str], list[_Segment]]:
    """The whole-path regex and the pattern's ``/``-separated segments."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidArgument(f"glob pattern must be a non-empty string, got {pattern!r}")
    check_glob(pattern)
    pat = pattern if pattern.startswith("/") else "/" + pattern
    if len(pat) > 1 and pat.endswith("/") and not pat.endswith("\\/"):
        pat = pat[:-1]
    full = re.compile(_translate(pat, pattern))
    segs = [] if pat == ROOT else [_segment(s, pattern) for s in _split(pat[1:], pattern)]
    return full, segs


def _segment(text: str, pattern: str) -> _Segment:
    cut = min((i for i, c in enumerate(text) if c in _SPECIAL), default=len(text))
    deep = "**" in text or _has_slash_in_braces(text)
    literal = text if cut == len(text) else None
    return _Segment(re.compile(_translate(text, pattern)), literal, text[:cut], deep)


def _split(pat: str, pattern: str) -> list[str]:
    """Split at ``/`` outside ``[...]`` and ``{...}``."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(pat):
        c = pat[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(pat, i, pattern) + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "/" and depth == 0:
            parts.append(pat[start:i])
            start = i + 1
        i += 1
    parts.append(pat[start:])
    if any(p == "" for p in parts):
        raise InvalidArgument(f"glob pattern {pattern!r}: empty segment", pattern=pattern)
    return parts


def _has_slash_in_braces(text: str) -> bool:
    depth = 0
    for c in text:
        depth += c == "{"
        depth -= c == "}"
        if c == "/" and depth > 0:
            return True
    return False


def _class_end(pat: str, i: int, pattern: str) -> int:
    j = i + 1
    if j < len(pat) and pat[j] == "!":
        j += 1
    if j < len(pat) and pat[j] == "]":
        j += 1
    end = pat.find("]", j)
    if end < 0:
        raise InvalidArgument(f"glob pattern {pattern!r}: unclosed '['", pattern=pattern)
    return end


def _translate(pat: str, pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pat):
        c = pat[i]
        if c == "*":
            if pat.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i + 1 >= len(pat):
                raise InvalidArgument(f"glob pattern {pattern!r}: trailing '\\'", pattern=pattern)
            out.append(re.escape(pat[i + 1]))
            i += 1
        elif c == "[":
            end = _class_end(pat, i, pattern)
            body = pat[i + 1 : end]
            negate = body.startswith("!")
            chars = body[1:] if negate else body
            escaped = chars.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            escaped = escaped.replace("]", "\\]")
            out.append(f"[^/{escaped}]" if negate else f"[{escaped}]")
            i = end
        elif c == "{":
            alts, end = _alternatives(pat, i, pattern)
            out.append("(?:" + "|".join(_translate(a, pattern) for a in alts) + ")")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + r"\Z"


def _alternatives(pat: str, i: int, pattern: str) -> tuple[list[str], int]:
    """The comma-separated parts of the ``{...}`` at ``i`` and the index of its ``}``."""
    depth, start, alts, j = 0, i + 1, [], i
    while j < len(pat):
        c = pat[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            j = _class_end(pat, j, pattern) + 1
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                alts.append(pat[start:j])
                return alts, j
        elif c == "," and depth == 1:
            alts.append(pat[start:j])
            start = j + 1
        j += 1
    raise InvalidArgument(f"glob pattern {pattern!r}: unclosed '{{'", pattern=pattern)


async def glob(
    store: ObjectStore, root: str, pattern: str, after: str | None = None
) -> AsyncGenerator[tuple[str, Node], None]:
    """``(path, node)`` for every file and directory matching ``pattern``, in
    path order; with ``after``, from the first match after that path on (the
    directories on the cursor's path are entered at the cursor's name, so the
    matches before it are not read again: pages resume here)."""
    full, segs = compile_pattern(pattern)
    child, node = await root_entry(store, root)
    cursor = segments(normalize(after)) if after else None
    key = sort_key(normalize(after)) if after else None
    async for path, found in flatten(_match(store, ROOT, child, segs, 0, full, node, cursor)):
        if key is None or sort_key(path) > key:
            yield path, found


def _bound(cursor: list[str] | None, level: int) -> str | None:
    """The cursor's name at ``level`` when the walk is on the cursor's path."""
    return cursor[level] if cursor is not None and level < len(cursor) else None


def _on_path(cursor: list[str] | None, level: int, name: str) -> list[str] | None:
    return cursor if _bound(cursor, level) == name else None


async def _match(
    store: ObjectStore,
    path: str,
    child: tree_pb2.Child,
    segs: list[_Segment],
    depth: int,
    full: re.Pattern[str],
    loaded: tree_pb2.DirNode | None,
    cursor: list[str] | None,
) -> AsyncGenerator[_Found | Descend[_Found], None]:
    """Matches at and below ``child``; deeper levels are ``Descend``-ed into
    (``flatten`` keeps the stack: paths nest deeper than Python's)."""
    if depth == len(segs):
        yield path, node_from_child(child)
        return
    seg = segs[depth]
    if seg.deep:
        if full.match(path):
            yield path, node_from_child(child)
        if child.kind == tree_pb2.DIR:
            async with aclosing(flatten(_walk(store, path, child, depth, cursor))) as below:
                async for sub, node in below:
                    if full.match(sub):
                        yield sub, node
        return
    if child.kind != tree_pb2.DIR:
        return
    dnode = loaded if loaded is not None else await load_dir(store, child.hash)
    bound = _bound(cursor, depth)
    if seg.literal is not None:
        if bound is not None and seg.literal < bound:
            return
        found = await find_child(store, dnode, seg.literal)
        if found is not None:
            sub_cursor = _on_path(cursor, depth, found.name)
            sub = join(path, found.name)
            yield Descend(_match(store, sub, found, segs, depth + 1, full, None, sub_cursor))
        return
    start = max(seg.prefix, bound) if bound is not None else (seg.prefix or None)
    async with aclosing(iter_children(store, dnode, start)) as entries:
        async for entry in entries:
            if not entry.name.startswith(seg.prefix):
                break
            if seg.regex.match(entry.name):
                sub_cursor = _on_path(cursor, depth, entry.name)
                sub = join(path, entry.name)
                yield Descend(_match(store, sub, entry, segs, depth + 1, full, None, sub_cursor))


async def _walk(
    store: ObjectStore, path: str, child: tree_pb2.Child, level: int, cursor: list[str] | None
) -> AsyncGenerator[_Found | Descend[_Found], None]:
    """Everything below ``child`` in walk order, from the cursor's path on."""
    bound = _bound(cursor, level)
    async with aclosing(iter_children(store, await load_dir(store, child.hash), bound)) as it:
        async for entry in it:
            sub = join(path, entry.name)
            yield sub, node_from_child(entry)
            if entry.kind == tree_pb2.DIR:
                sub_cursor = _on_path(cursor, level, entry.name)
                yield Descend(_walk(store, sub, entry, level + 1, sub_cursor))
