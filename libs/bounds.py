"""The documented bounds on what users name and send (docs/decisions/0019).

Every check raises ``LimitExceeded`` (an ``InvalidArgument``) naming the
limit and the offending value, cut to a readable length. The numbers:

- a repo name: 63 bytes (a DNS label; a pipeline's output repo is named
  like the pipeline, and names end up in NATS subjects and object keys);
- a branch name: 255 bytes (a file name's limit; branches are refs, not paths);
- a pipeline name: 48 bytes, so that the worker controller's Kubernetes name
  ``pipeline-<name>-v<N>`` stays within a 63-byte DNS label for every
  version up to 9999;
- a path: 4096 bytes in all and 255 bytes per component (what a Linux file
  system holds; ~2,000 directory levels, which every tree walk handles);
- a pipeline's input tree: 32 levels of cross/union nesting, and a JSON
  document (a spec, an HTTP body): 64 levels of nesting;
- a glob pattern: 4096 bytes with at most 16 nested ``{...}``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from libs.errors import LimitExceeded

MAX_REPO_NAME = 63
MAX_BRANCH_NAME = 255
MAX_PIPELINE_NAME = 48
MAX_PATH_BYTES = 4096
MAX_PATH_COMPONENT_BYTES = 255
MAX_INPUT_DEPTH = 32
MAX_JSON_DEPTH = 64
MAX_GLOB_BYTES = 4096
MAX_GLOB_BRACES = 16


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_name(what: str, name: str, limit: int) -> str:
    """``name`` if it is at most ``limit`` bytes long."""
    size = _size(name)
    if size > limit:
        raise LimitExceeded(what, name, limit, "bytes", size)
    return name


def check_path(path: str) -> str:
    """``path`` if it and each of its components fit a Linux file system."""
    size = _size(path)
    if size > MAX_PATH_BYTES:
        raise LimitExceeded("path", path, MAX_PATH_BYTES, "bytes", size)
    if size > MAX_PATH_COMPONENT_BYTES:
        for part in path.split("/"):
            n = _size(part)
            if n > MAX_PATH_COMPONENT_BYTES:
                raise LimitExceeded(
                    f"path component of {path[:60]!r}", part, MAX_PATH_COMPONENT_BYTES, "bytes", n
                )
    return path


def check_glob(pattern: str) -> str:
    size = _size(pattern)
    if size > MAX_GLOB_BYTES:
        raise LimitExceeded("glob pattern", pattern, MAX_GLOB_BYTES, "bytes", size)
    depth = deepest = 0
    for ch in pattern:
        depth += ch == "{"
        depth -= ch == "}"
        deepest = max(deepest, depth)
    if deepest > MAX_GLOB_BRACES:
        raise LimitExceeded("glob pattern", pattern, MAX_GLOB_BRACES, "nested braces", deepest)
    return pattern


def json_depth(text: str | bytes) -> int:
    """How deeply ``[``/``{`` nest in a JSON text (outside strings), without
    parsing it (so a hostile document cannot exhaust the parser's stack)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def check_json_depth(what: str, text: str | bytes) -> None:
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        head = text[:40] if isinstance(text, str) else text[:40].decode("utf-8", "replace")
        raise LimitExceeded(what, head, MAX_JSON_DEPTH, "levels of nesting", depth)


def check_value_depth(what: str, value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """Iteratively measure how deeply dicts/lists nest in a parsed value."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise LimitExceeded(what, "document", limit, "levels of nesting", depth)
        stack.extend((c, depth + 1) for c in children)


# Where the names and paths sit in the public API's messages, for the
# gateway's check of a request before anything of it reaches NATS.
_MESSAGE_FIELDS: dict[str, tuple[str, str, int]] = {
    "pfs.Repo": ("name", "repo name", MAX_REPO_NAME),
    "pfs.Branch": ("name", "branch name", MAX_BRANCH_NAME),
    "pps.Pipeline": ("name", "pipeline name", MAX_PIPELINE_NAME),
}


def check_message(msg: Message) -> None:
    """Every repo, branch and pipeline name and every file path in ``msg``
    (at any depth, walked with a stack) within its bound."""
    stack: list[Message] = [msg]
    while stack:
        item = stack.pop()
        if item.DESCRIPTOR.full_name == "pfs.PutFileRequest" and item.batch:  # type: ignore[attr-defined]
            _check_batch(item, stack)
            continue
        rule = _MESSAGE_FIELDS.get(item.DESCRIPTOR.full_name)
        if rule is not None:
            field, what, limit = rule
            check_name(what, getattr(item, field), limit)
        elif item.DESCRIPTOR.full_name == "pfs.File":
            check_path(item.path)  # type: ignore[attr-defined]
        for field_desc, value in item.ListFields():
            if field_desc.message_type is None or field_desc.message_type.GetOptions().map_entry:
                continue
            if field_desc.is_repeated:
                stack.extend(value)
            else:
                stack.append(value)


def _check_batch(msg: Message, stack: list[Message]) -> None:
    """A put-file batch (up to thousands of small files): each plain entry's
    path and repo name checked directly, without walking its messages (the
    only names a plain entry holds); any other entry or field is walked."""
    repos: set[str] = set()
    for entry in msg.batch:  # type: ignore[attr-defined]
        if entry.batch or entry.HasField("header") or entry.HasField("footer"):
            stack.append(entry)
            continue
        file = entry.file
        check_path(file.path)
        repo = file.commit.repo.name
        if repo not in repos:
            check_name("repo name", repo, MAX_REPO_NAME)
            repos.add(repo)
    for field_desc, value in msg.ListFields():
        if field_desc.name != "batch" and field_desc.message_type is not None:
            stack.append(value)
