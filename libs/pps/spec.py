"""Pipeline specs: reading them (JSON or YAML, Pachyderm 1.7's field names),
checking everything that needs no cluster state, filling in 1.7's defaults,
and writing them back out. Pure: no I/O.

- ``load_specs``: one or several specs from a file's bytes.
- ``check_spec``: a validated, normalized copy of one spec.
- ``input_names``, ``atom_inputs``, ``cron_inputs``, ``input_branches``:
  walks over a spec's input tree (depth-first, in spec order).
- ``spec_to_dict`` / ``spec_to_json``: the form ``extract-pipeline`` prints,
  which ``load_specs`` reads back to an equal message.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from libs import bounds
from libs.api.pps import pps_pb2
from libs.errors import InvalidArgument, LimitExceeded
from libs.pps.cron import CronSchedule, parse_go_duration
from libs.trees.glob import compile_pattern

CreatePipelineRequest = pps_pb2.CreatePipelineRequest

DEFAULT_OUTPUT_BRANCH = "master"
DEFAULT_INPUT_BRANCH = "master"
DEFAULT_DATUM_TRIES = 3
MAX_PIPELINE_NAME = bounds.MAX_PIPELINE_NAME  # see libs/bounds.py
OUTPUT_INPUT_NAME = "out"

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Object-store URLs egress writes to (1.7: s3, gs, as/wasb).
_EGRESS_URL = re.compile(r"^(s3|gs|as|wasb|wasbs)://[^/\s]+(/\S*)?$")

# ---- reading ---------------------------------------------------------------

_F = FieldDescriptor
_INTS = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (_F.TYPE_DOUBLE, _F.TYPE_FLOAT)


def _kind(value: object) -> str:
    """How a decoded JSON/YAML value reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, datetime | date):
        return "a date"
    return type(value).__name__


class _Reader:
    """Fills a message from decoded JSON/YAML, naming the path of whatever
    is wrong (``input.cross[1].atom.glob``)."""

    def __init__(self, label: str) -> None:
        self.label = label

    def error(self, path: str, what: str) -> InvalidArgument:
        return InvalidArgument(f"{self.label}: {what}", field=path)

    def wrong(self, path: str, expected: str, value: object) -> InvalidArgument:
        return self.error(path, f"field '{path}' must be {expected}, got {_kind(value)}")

    def message(self, msg: Message, value: object, path: str) -> None:
        full = msg.DESCRIPTOR.full_name
        if full == "google.protobuf.Duration":
            self.duration(msg, value, path)
            return
        if full == "google.protobuf.Timestamp":
            self.timestamp(msg, value, path)
            return
        if not isinstance(value, dict):
            raise self.wrong(path, "an object", value)
        fields = _fields_by_key(msg.DESCRIPTOR)
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                raise self.error(where, f"unknown field '{where}'")
            if item is None:
                continue  # null means unset, as in protobuf JSON
            self.field(msg, field, item, where)

    def field(self, msg: Message, field: FieldDescriptor, value: object, path: str) -> None:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            self.map(msg, field, value, path)
        elif field.is_repeated:
            if not isinstance(value, list):
                raise self.wrong(path, "a list", value)
            container = getattr(msg, field.name)
            for i, item in enumerate(value):
                where = f"{path}[{i}]"
                if field.message_type is not None:
                    self.message(container.add(), item, where)
                else:
                    container.append(self.scalar(field, item, where))
        elif field.message_type is not None:
            child = getattr(msg, field.name)
            child.SetInParent()  # an empty object still sets the field
            self.message(child, value, path)
        else:
            setattr(msg, field.name, self.scalar(field, value, path))

    def map(self, msg: Message, field: FieldDescriptor, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise self.wrong(path, "an object", value)
        entry: Any = field.message_type
        key_field = entry.fields_by_name["key"]
        value_field = entry.fields_by_name["value"]
        container = getattr(msg, field.name)
        for raw_key, item in value.items():
            where = f"{path}.{raw_key}"
            if key_field.type == _F.TYPE_STRING:
                if not isinstance(raw_key, str):
                    raise self.error(where, f"keys of '{path}' must be strings")
                key: object = raw_key
            else:
                key = self.scalar(key_field, raw_key, where)
            if item is None:
                raise self.wrong(where, "a value", item)
            if value_field.message_type is not None:
                self.message(container[key], item, where)
            else:
                container[key] = self.scalar(value_field, item, where)

    def scalar(self, field: FieldDescriptor, value: object, path: str) -> Any:
        kind = field.type
        if kind == _F.TYPE_STRING:
            if not isinstance(value, str):
                raise self.wrong(path, "a string", value)
            return value
        if kind == _F.TYPE_BOOL:
            if not isinstance(value, bool):
                raise self.wrong(path, "true or false", value)
            return value
        if kind in _INTS:
            return self.integer(kind, value, path)
        if kind in _FLOATS:
            return self.number(value, path)
        if kind == _F.TYPE_ENUM:
            return self.enum(field, value, path)
        if kind == _F.TYPE_BYTES:
            if not isinstance(value, str):
                raise self.wrong(path, "a base64 string", value)
            try:
                return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
            except ValueError:
                raise self.error(path, f"field '{path}' is not valid base64") from None
        raise self.error(path, f"field '{path}' has an unsupported type")

    def integer(self, kind: int, value: object, path: str) -> int:
        low, high = _INTS[kind]
        expected = "a whole number" if low < 0 else "a whole number, zero or more"
        number: int
        if isinstance(value, bool):
            raise self.wrong(path, expected, value)
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            number = int(value.strip())
        else:
            raise self.wrong(path, expected, value)
        if number < low:
            raise self.error(path, f"field '{path}' must not be negative, got {number}")
        if number > high:
            raise self.error(path, f"field '{path}' is too large: {number}")
        return number

    def number(self, value: object, path: str) -> float:
        if isinstance(value, bool):
            raise self.wrong(path, "a number", value)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise self.wrong(path, "a number", value)

    def enum(self, field: FieldDescriptor, value: object, path: str) -> int:
        enum: Any = field.enum_type
        if isinstance(value, str) and value in enum.values_by_name:
            number: int = enum.values_by_name[value].number
            return number
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value in enum.values_by_number
        ):
            return value
        names = ", ".join(v.name for v in enum.values)
        raise self.error(path, f"field '{path}' must be one of {names}, got {value!r}")

    def duration(self, msg: Message, value: object, path: str) -> None:
        assert isinstance(msg, Duration)
        if isinstance(value, dict):
            self.message_fields(msg, value, path)
            return
        if not isinstance(value, str):
            raise self.wrong(path, "a duration string such as '60s' or '1m30s'", value)
        try:
            msg.FromNanoseconds(parse_go_duration(value.strip()))
        except InvalidArgument as exc:
            raise self.error(path, f"field '{path}': {exc}") from None

    def timestamp(self, msg: Message, value: object, path: str) -> None:
        assert isinstance(msg, Timestamp)
        if isinstance(value, datetime):  # YAML reads unquoted times itself
            msg.FromDatetime(value if value.tzinfo else value.replace(tzinfo=UTC))
            return
        if isinstance(value, dict):
            self.message_fields(msg, value, path)
            return
        if not isinstance(value, str):
            raise self.wrong(path, "an RFC 3339 time such as '2018-01-01T00:00:00Z'", value)
        try:
            msg.FromJsonString(value.strip())
        except ValueError:
            raise self.error(
                path,
                f"field '{path}' must be an RFC 3339 time such as "
                f"'2018-01-01T00:00:00Z', got {value!r}",
            ) from None

    def message_fields(self, msg: Message, value: dict[Any, Any], path: str) -> None:
        """A well-known type given field by field ({"seconds": 60})."""
        fields = _fields_by_key(msg.DESCRIPTOR)
        for key, item in value.items():
            where = f"{path}.{key}"
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                raise self.error(where, f"unknown field '{where}'")
            if item is not None:
                setattr(msg, field.name, self.scalar(field, item, where))


def _fields_by_key(descriptor: Descriptor | Any) -> dict[str, FieldDescriptor]:
    """A message's fields under their proto names and their lowerCamelCase
    JSON names (jsonpb accepts both)."""
    fields: dict[str, FieldDescriptor] = {}
    for field in descriptor.fields:
        fields[field.name] = field
        fields[field.json_name] = field
    if descriptor.full_name == "pps.GitInput":
        fields["URL"] = descriptor.fields_by_name["url"]  # 1.7's JSON spells it so
    return fields


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _skip_blank(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _json_documents(text: str, source: str) -> Iterator[object]:
    """Several JSON values one after another, as 1.7's manifest reader
    (a streaming json.Decoder) takes them."""
    decoder = json.JSONDecoder()
    pos = _skip_blank(text, 0)
    while pos < len(text):
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        yield value
        pos = _skip_blank(text, end)
        if pos < len(text) and text[pos] not in "{[":
            line, col = _line_col(text, pos)
            raise InvalidArgument(
                f"{source}: invalid JSON at line {line}, column {col}: "
                "expected the start of another spec ('{')"
            )


def _yaml_documents(text: str, source: str) -> list[object]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise InvalidArgument(f"{source}: invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise InvalidArgument(f"{source}: YAML nested too deeply") from None
    for doc in docs:
        bounds.check_value_depth(source, doc)
    return docs


def load_specs(data: bytes | str, source: str = "pipeline spec") -> list[CreatePipelineRequest]:
    """Every spec in ``data``: JSON (one object or several one after
    another) or YAML (one or several documents). Field names as 1.7's JSON
    (snake_case proto names or lowerCamelCase); durations as Go duration
    strings (``"60s"``, ``"1m30s"``). ``source`` names the input in errors."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{source}: not UTF-8 text (byte {exc.start})") from None
    else:
        text = data
    text = text.removeprefix("\ufeff")
    stripped = text.lstrip()
    bounds.check_json_depth(source, text)  # YAML flow nesting uses the same brackets
    docs = (
        list(_json_documents(text, source))
        if stripped.startswith(("{", "["))
        else _yaml_documents(text, source)
    )
    if not docs:
        raise InvalidArgument(f"{source}: no pipeline spec found")
    specs = []
    for i, doc in enumerate(docs):
        label = source if len(docs) == 1 else f"{source} #{i + 1}"
        reader = _Reader(label)
        if not isinstance(doc, dict):
            raise reader.error("", f"expected an object (a pipeline spec), got {_kind(doc)}")
        spec = CreatePipelineRequest()
        reader.message(spec, doc, "")
        specs.append(spec)
    return specs


# ---- input tree walks ------------------------------------------------------


def _walk(input: pps_pb2.Input, path: str = "input") -> Iterator[tuple[str, pps_pb2.Input]]:
    """Every node of an input tree with its path, depth-first, parents
    first, children in spec order (a stack of its own, no recursion)."""
    stack = [(path, input)]
    while stack:
        where, node = stack.pop()
        yield where, node
        kids = [(f"{where}.cross[{i}]", c) for i, c in enumerate(node.cross)]
        kids += [(f"{where}.union[{i}]", c) for i, c in enumerate(node.union)]
        stack.extend(reversed(kids))


def input_depth(input: pps_pb2.Input) -> int:
    """How many levels of cross/union an input tree has (an atom alone: 1)."""
    deepest = 0
    stack = [(input, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in (*node.cross, *node.union))
    return deepest


def check_input_depth(name: str, input: pps_pb2.Input) -> None:
    """LimitExceeded when the input tree nests deeper than ``MAX_INPUT_DEPTH``."""
    depth = input_depth(input)
    if depth > bounds.MAX_INPUT_DEPTH:
        raise LimitExceeded(
            f"pipeline {name!r}: input", "cross/union", bounds.MAX_INPUT_DEPTH, "levels", depth
        )


def atom_inputs(input: pps_pb2.Input) -> list[pps_pb2.AtomInput]:
    """The atom inputs, depth-first in spec order."""
    return [node.atom for _, node in _walk(input) if node.HasField("atom")]


def cron_inputs(input: pps_pb2.Input) -> list[pps_pb2.CronInput]:
    """The cron inputs, depth-first in spec order."""
    return [node.cron for _, node in _walk(input) if node.HasField("cron")]


def git_inputs(input: pps_pb2.Input) -> list[pps_pb2.GitInput]:
    """The git inputs, depth-first in spec order."""
    return [node.git for _, node in _walk(input) if node.HasField("git")]


def git_repo_name(url: str) -> str:
    """1.7's default name of a git input: the last path segment of its URL
    without ``.git`` (``https://github.com/a/b.git`` -> ``b``)."""
    tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[: -len(".git")] if tail.endswith(".git") else tail


def _leaf_name(node: pps_pb2.Input) -> str | None:
    if node.HasField("atom"):
        return node.atom.name or node.atom.repo
    if node.HasField("cron"):
        return node.cron.name
    if node.HasField("git"):
        return node.git.name
    return None


def input_names(input: pps_pb2.Input) -> list[str]:
    """The names of the leaf inputs (atom, cron), depth-first; an atom
    without a name goes by its repo."""
    return [name for _, node in _walk(input) if (name := _leaf_name(node)) is not None]


def _cron_repo(pipeline: str, cron: pps_pb2.CronInput) -> str:
    return cron.repo or f"{pipeline}_{cron.name}"


def input_branches(spec: CreatePipelineRequest) -> list[tuple[str, str, str]]:
    """``(input name, repo, branch)`` of every atom and cron input,
    depth-first: the provenance of the pipeline's output branch. Defaults
    apply as in ``check_spec`` (so a spec not yet normalized gives the same
    answer)."""
    result: list[tuple[str, str, str]] = []
    for _, node in _walk(spec.input):
        if node.HasField("atom"):
            atom = node.atom
            result.append((atom.name or atom.repo, atom.repo, atom.branch or DEFAULT_INPUT_BRANCH))
        elif node.HasField("cron"):
            cron = node.cron
            result.append((cron.name, _cron_repo(spec.pipeline.name, cron), "master"))
        elif node.HasField("git"):
            git = node.git
            name = git.name or git_repo_name(git.url)
            result.append((name, name, git.branch or DEFAULT_INPUT_BRANCH))
    return result


# ---- checking --------------------------------------------------------------


def _invalid(pipeline: str, what: str, field: str) -> InvalidArgument:
    who = f"pipeline {pipeline!r}" if pipeline else "pipeline spec"
    return InvalidArgument(f"{who}: {what}", pipeline=pipeline, field=field)


def _check_name(pipeline: str, kind: str, name: str, field: str) -> None:
    if not _NAME.match(name):
        raise _invalid(
            pipeline,
            f"{field} {name!r} is not a valid {kind}: only alphanumeric characters, "
            "underscores and dashes are allowed",
            field,
        )


def _negative(duration: Duration) -> bool:
    return duration.seconds < 0 or duration.nanos < 0


def _check_pipeline_name(spec: CreatePipelineRequest) -> str:
    name = spec.pipeline.name
    if not name:
        raise _invalid("", "pipeline.name is missing: every pipeline needs a name", "pipeline")
    _check_name("", "pipeline name", name, "pipeline.name")
    if len(name) > MAX_PIPELINE_NAME:
        raise _invalid(
            "",
            f"pipeline.name {name!r} is too long: {len(name)} characters, at most "
            f"{MAX_PIPELINE_NAME} are allowed",
            "pipeline.name",
        )
    return name


def _check_transform(name: str, spec: CreatePipelineRequest) -> None:
    if not spec.HasField("transform"):
        raise _invalid(name, "transform is missing: a pipeline needs a command to run", "transform")
    if not spec.transform.cmd:
        raise _invalid(name, "transform.cmd is empty: a pipeline needs a command to run", "cmd")
    for i, code in enumerate(spec.transform.accept_return_code):
        if code < 0:
            raise _invalid(
                name,
                f"transform.accept_return_code[{i}] is {code}: exit codes are not negative",
                "transform.accept_return_code",
            )


_KINDS = ("atom", "cross", "union", "cron", "git")


def _set_kinds(node: pps_pb2.Input) -> list[str]:
    kinds = [k for k in ("atom", "cron", "git") if node.HasField(k)]  # type: ignore[arg-type]
    kinds += [k for k in ("cross", "union") if getattr(node, k)]
    return sorted(kinds, key=_KINDS.index)


def _check_atom(name: str, atom: pps_pb2.AtomInput, path: str) -> None:
    if not atom.repo:
        raise _invalid(name, f"{path}.atom.repo is missing: an atom input names a repo", path)
    _check_name(name, "repo name", atom.repo, f"{path}.atom.repo")
    if atom.repo == name:
        raise _invalid(
            name,
            f"{path}.atom.repo {atom.repo!r} is the pipeline's own output repo: a pipeline "
            "cannot read its own output",
            f"{path}.atom.repo",
        )
    _check_name(name, "branch name", atom.branch, f"{path}.atom.branch")
    if not atom.glob:
        raise _invalid(
            name,
            f"{path}.atom.glob is missing: an atom input needs a glob pattern (e.g. '/*')",
            f"{path}.atom.glob",
        )
    try:
        compile_pattern(atom.glob)
    except InvalidArgument as exc:
        raise _invalid(
            name, f"{path}.atom.glob {atom.glob!r} is not a valid glob pattern: {exc}", path
        ) from None


def _check_cron(name: str, cron: pps_pb2.CronInput, path: str) -> None:
    if not cron.spec:
        raise _invalid(
            name, f"{path}.cron.spec is missing: a cron input needs a schedule", f"{path}.cron"
        )
    try:
        CronSchedule.parse(cron.spec)
    except InvalidArgument as exc:
        raise _invalid(name, f"{path}.cron.spec: {exc}", f"{path}.cron.spec") from None
    _check_name(name, "repo name", cron.repo, f"{path}.cron.repo")
    if cron.repo == name:
        raise _invalid(
            name,
            f"{path}.cron.repo {cron.repo!r} is the pipeline's own output repo",
            f"{path}.cron.repo",
        )


_GIT_URL = re.compile(r"^(https?|git|ssh|file)://\S+$|^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+$")


def _check_git(name: str, git: pps_pb2.GitInput, path: str) -> None:
    if not git.url:
        raise _invalid(
            name, f"{path}.git.url is missing: a git input names a repository", f"{path}.git.url"
        )
    if not _GIT_URL.match(git.url) or git.url.startswith("-"):
        raise _invalid(
            name,
            f"{path}.git.url {git.url!r} is not a git URL: expected https://host/owner/repo.git "
            "(or http://, git://, ssh://, user@host:path)",
            f"{path}.git.url",
        )
    _check_name(name, "branch name", git.branch, f"{path}.git.branch")
    if git.commit:
        raise _invalid(
            name,
            f"{path}.git.commit is set: it is filled in by the cluster, not the spec",
            f"{path}.git.commit",
        )
    if git.name == name:
        raise _invalid(
            name,
            f"{path}.git.name {git.name!r} is the pipeline's own output repo",
            f"{path}.git.name",
        )


def _check_input_name(name: str, leaf: str, path: str, seen: dict[str, list[str]]) -> None:
    if not leaf:
        raise _invalid(name, f"{path}.name is missing: every input needs a name", path)
    _check_name(name, "input name", leaf, f"{path}.name")
    if leaf == OUTPUT_INPUT_NAME:
        raise _invalid(
            name,
            f"{path}.name cannot be {OUTPUT_INPUT_NAME!r}: /pfs/out is where the pipeline "
            "writes its output",
            f"{path}.name",
        )
    clash = [other for other in seen.get(leaf, []) if not _alternatives(other, path)]
    if clash:
        raise _invalid(
            name,
            f"input name {leaf!r} is used more than once ({clash[0]} and {path}): "
            "every input needs its own name (only the members of a union may share one)",
            f"{path}.name",
        )
    seen.setdefault(leaf, []).append(path)


def _alternatives(first: str, second: str) -> bool:
    """Whether two input paths lie in different members of one union (a
    datum has only one of them, so they may share a name, as in 1.7): their
    paths part right after a ``union[i]`` step."""
    a, b = first.split("."), second.split(".")
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    if common >= min(len(a), len(b)):
        return False
    return a[common].startswith("union[") and b[common].startswith("union[")


def _check_input(name: str, spec: CreatePipelineRequest) -> None:
    if not spec.HasField("input"):
        raise _invalid(name, "input is missing: a pipeline needs at least one input", "input")
    seen: dict[str, list[str]] = {}
    for path, node in _walk(spec.input):
        kinds = _set_kinds(node)
        if not kinds:
            raise _invalid(
                name,
                f"{path} sets no input: exactly one of atom, cross, union or cron is needed "
                "(an empty cross or union counts as none)",
                path,
            )
        if len(kinds) > 1:
            raise _invalid(
                name,
                f"{path} sets several inputs ({', '.join(kinds)}): exactly one of atom, "
                "cross, union or cron is allowed",
                path,
            )
        if node.HasField("git"):
            _check_git(name, node.git, path)
            _check_input_name(name, node.git.name, f"{path}.git", seen)
        elif node.HasField("atom"):
            _check_atom(name, node.atom, path)
            _check_input_name(name, node.atom.name, f"{path}.atom", seen)
        elif node.HasField("cron"):
            _check_input_name(name, node.cron.name, f"{path}.cron", seen)
            _check_cron(name, node.cron, path)


def _check_incremental(name: str, spec: CreatePipelineRequest) -> None:
    if not spec.incremental:
        return
    seen: set[tuple[str, str]] = set()
    for _, repo, branch in input_branches(spec):
        if (repo, branch) in seen:
            raise _invalid(
                name,
                f"an incremental pipeline cannot have inputs that share provenance: "
                f"{repo}@{branch} is read more than once",
                "incremental",
            )
        seen.add((repo, branch))


def _check_settings(name: str, spec: CreatePipelineRequest) -> None:
    _check_name(name, "branch name", spec.output_branch, "output_branch")
    if spec.HasField("egress") and not _EGRESS_URL.match(spec.egress.URL):
        raise _invalid(
            name,
            f"egress.URL {spec.egress.URL!r} is not an object-store URL: expected "
            "s3://, gs://, as:// or wasb:// then <bucket>/<path>",
            "egress.URL",
        )
    par = spec.parallelism_spec
    if math.isnan(par.coefficient) or par.coefficient < 0:
        raise _invalid(
            name,
            f"parallelism_spec.coefficient is {par.coefficient}: it must be zero or more",
            "parallelism_spec.coefficient",
        )
    if par.constant and par.coefficient:
        raise _invalid(
            name,
            "parallelism_spec sets both constant and coefficient: set at most one of them",
            "parallelism_spec",
        )
    if spec.HasField("service") and (par.coefficient or par.constant != 1):
        raise _invalid(
            name,
            "a service pipeline runs with a constant parallelism of 1",
            "parallelism_spec",
        )
    for field in ("datum_timeout", "job_timeout", "scale_down_threshold"):
        if spec.HasField(field) and _negative(getattr(spec, field)):  # type: ignore[arg-type]
            raise _invalid(name, f"{field} is negative: it must be zero or more", field)
    if spec.datum_tries < 0:
        raise _invalid(
            name, f"datum_tries is {spec.datum_tries}: it must be zero or more", "datum_tries"
        )
    if spec.max_queue_size < 0:
        raise _invalid(
            name,
            f"max_queue_size is {spec.max_queue_size}: it must be zero or more",
            "max_queue_size",
        )
    chunk = spec.chunk_spec
    for field in ("number", "size_bytes"):
        value = getattr(chunk, field)
        if value < 0:
            raise _invalid(
                name, f"chunk_spec.{field} is {value}: it must be zero or more", "chunk_spec"
            )
    if chunk.number and chunk.size_bytes:
        raise _invalid(
            name,
            "chunk_spec sets both number and size_bytes: set at most one of them",
            "chunk_spec",
        )


def _fill_defaults(spec: CreatePipelineRequest) -> None:
    if not spec.output_branch:
        spec.output_branch = DEFAULT_OUTPUT_BRANCH
    for _, node in _walk(spec.input):
        if node.HasField("atom"):
            if not node.atom.name:
                node.atom.name = node.atom.repo
            if not node.atom.branch:
                node.atom.branch = DEFAULT_INPUT_BRANCH
        elif node.HasField("cron") and not node.cron.repo and node.cron.name:
            node.cron.repo = _cron_repo(spec.pipeline.name, node.cron)
        elif node.HasField("git"):
            if not node.git.name:
                node.git.name = git_repo_name(node.git.url)
            if not node.git.branch:
                node.git.branch = DEFAULT_INPUT_BRANCH
    if spec.datum_tries == 0:
        spec.datum_tries = DEFAULT_DATUM_TRIES
    par = spec.parallelism_spec
    if par.constant == 0 and par.coefficient == 0:
        par.constant = 1


def check_spec(req: CreatePipelineRequest) -> CreatePipelineRequest:
    """A validated copy of ``req`` with 1.7's defaults filled in (output
    branch ``master``, atom name = repo, atom branch ``master``, cron repo
    ``<pipeline>_<input>``, ``datum_tries`` 3, parallelism constant 1).
    Everything that needs no cluster state is checked; a problem is an
    InvalidArgument naming the field. ``req`` is left as it was."""
    spec = CreatePipelineRequest()
    spec.CopyFrom(req)
    name = _check_pipeline_name(spec)
    check_input_depth(name, spec.input)
    _check_transform(name, spec)
    _fill_defaults(spec)
    _check_input(name, spec)
    _check_incremental(name, spec)
    _check_settings(name, spec)
    return spec


# ---- writing ---------------------------------------------------------------


def _value(field: FieldDescriptor, value: Any) -> object:
    if field.message_type is not None:
        return message_to_dict(value)
    if field.type == _F.TYPE_ENUM:
        enum: Any = field.enum_type
        enum_value = enum.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if field.type == _F.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    return value


def message_to_dict(msg: Message) -> object:
    """Any message as JSON-ready data, the way ``spec_to_dict`` writes a spec."""
    if isinstance(msg, Duration):
        return msg.ToJsonString()
    if isinstance(msg, Timestamp):
        return msg.ToJsonString()
    out: dict[str, object] = {}
    for field, value in msg.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _value(value_field, value[k]) for k in sorted(value)}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        else:
            key = "URL" if field.full_name == "pps.GitInput.url" else field.name
            out[key] = _value(field, value)
    return out


def spec_to_dict(req: CreatePipelineRequest) -> dict[str, object]:
    """The spec as JSON-ready data: proto field names, unset fields left
    out, durations as ``"60s"``, times as RFC 3339, numbers as numbers."""
    data = message_to_dict(req)
    assert isinstance(data, dict)
    return data


def spec_to_json(req: CreatePipelineRequest) -> str:
    """``spec_to_dict`` as JSON indented by 2 (no trailing new line)."""
    return json.dumps(spec_to_dict(req), indent=2, ensure_ascii=False)


__all__ = [
    "DEFAULT_DATUM_TRIES",
    "DEFAULT_INPUT_BRANCH",
    "DEFAULT_OUTPUT_BRANCH",
    "MAX_PIPELINE_NAME",
    "CreatePipelineRequest",
    "atom_inputs",
    "check_spec",
    "cron_inputs",
    "input_branches",
    "input_names",
    "load_specs",
    "message_to_dict",
    "spec_to_dict",
    "spec_to_json",
]
