"""Pipeline specs: loading (JSON, several JSON objects, YAML), errors that
name the field and the place, validation with 1.7's defaults, input walks,
and the extract-pipeline JSON round trip."""

from __future__ import annotations

import json

import pytest

from libs.api.pps import pps_pb2 as pps
from libs.errors import InvalidArgument
from libs.pps.git import same_repository, url_problem
from libs.pps.spec import (
    atom_inputs,
    check_spec,
    cron_inputs,
    input_branches,
    input_names,
    load_specs,
    spec_to_dict,
    spec_to_json,
)

EDGES = """
{
  "pipeline": {"name": "edges"},
  "description": "A pipeline that performs image edge detection.",
  "transform": {
    "cmd": ["python3", "/edges.py"],
    "image": "pachyderm/opencv",
    "env": {"MODE": "fast"},
    "accept_return_code": [1]
  },
  "parallelism_spec": {"constant": 2},
  "input": {"atom": {"repo": "images", "glob": "/*"}},
  "datum_timeout": "1m30s",
  "job_timeout": "1h",
  "enable_stats": true,
  "chunk_spec": {"number": 4},
  "egress": {"URL": "s3://bucket/dir"}
}
"""

MONTAGE = """
{
  "pipeline": {"name": "montage"},
  "transform": {"cmd": ["sh"], "stdin": ["montage -shadow /pfs/*/* /pfs/out/montage.png"]},
  "input": {
    "cross": [
      {"atom": {"name": "imgs", "repo": "images", "glob": "/", "branch": "dev"}},
      {"union": [
        {"atom": {"repo": "edges", "glob": "/*"}},
        {"cron": {"name": "tick", "spec": "@every 60s"}}
      ]}
    ]
  }
}
"""


def spec(**fields: object) -> pps.CreatePipelineRequest:
    base: dict[str, object] = {
        "pipeline": {"name": "p"},
        "transform": {"cmd": ["true"]},
        "input": {"atom": {"repo": "in", "glob": "/*"}},
    }
    base.update(fields)
    return load_specs(json.dumps(base))[0]


def invalid(req: pps.CreatePipelineRequest, match: str) -> str:
    with pytest.raises(InvalidArgument, match=match) as info:
        check_spec(req)
    return str(info.value)


def load_error(text: str, match: str) -> str:
    with pytest.raises(InvalidArgument, match=match) as info:
        load_specs(text)
    return str(info.value)


# --- loading ------------------------------------------------------------------


def test_loads_the_1_7_fields() -> None:
    [req] = load_specs(EDGES)
    assert req.pipeline.name == "edges"
    assert list(req.transform.cmd) == ["python3", "/edges.py"]
    assert dict(req.transform.env) == {"MODE": "fast"}
    assert list(req.transform.accept_return_code) == [1]
    assert req.parallelism_spec.constant == 2
    assert req.input.atom.repo == "images" and req.input.atom.glob == "/*"
    assert req.datum_timeout.ToSeconds() == 90
    assert req.job_timeout.ToSeconds() == 3600
    assert req.enable_stats
    assert req.chunk_spec.number == 4
    assert req.egress.URL == "s3://bucket/dir"


def test_several_json_objects_one_after_another() -> None:
    reqs = load_specs(EDGES + MONTAGE)
    assert [r.pipeline.name for r in reqs] == ["edges", "montage"]
    assert load_specs(EDGES.strip() + MONTAGE.strip())[1].pipeline.name == "montage"


def test_lower_camel_case_names_and_bytes_input() -> None:
    [req] = load_specs(
        b'{"pipeline": {"name": "x"}, "parallelismSpec": {"coefficient": 0.5},'
        b' "outputBranch": "out", "datumTries": "5", "transform": {"workingDir": "/w"}}'
    )
    assert req.parallelism_spec.coefficient == 0.5
    assert req.output_branch == "out"
    assert req.datum_tries == 5
    assert req.transform.working_dir == "/w"


def test_yaml_one_or_several_documents() -> None:
    text = """
pipeline:
  name: a
transform:
  cmd: [sh]
  stdin:
    - echo hi
input:
  cross:
    - atom: {repo: r, glob: /*}
    - cron:
        name: tick
        spec: "*/5 * * * *"
        start: 2018-01-01T00:00:00Z
datum_timeout: 30s
---
pipeline: {name: b}
---
"""
    a, b = load_specs(text)
    assert a.pipeline.name == "a" and b.pipeline.name == "b"
    assert a.input.cross[1].cron.start.seconds == 1514764800
    assert a.datum_timeout.seconds == 30


def test_durations_in_several_forms() -> None:
    assert spec(datum_timeout="90s").datum_timeout.seconds == 90
    assert spec(datum_timeout="1.5s").datum_timeout.nanos == 500_000_000
    assert spec(datum_timeout={"seconds": 7}).datum_timeout.seconds == 7


def test_null_means_unset_and_empty_objects_set_the_field() -> None:
    req = spec(egress=None, chunk_spec={})
    assert not req.HasField("egress")
    assert req.HasField("chunk_spec")


def test_unknown_fields_are_named_by_their_path() -> None:
    msg = load_error(
        '{"pipeline": {"name": "x"}, "input": {"atom": {"globb": "/*"}}}',
        "unknown field 'input.atom.globb'",
    )
    assert msg == "pipeline spec: unknown field 'input.atom.globb'"
    load_error(
        '{"input": {"cross": [{"atom": {}}, {"atom": {"rep": "x"}}]}}',
        r"unknown field 'input.cross\[1\].atom.rep'",
    )
    load_error('{"inputs": []}', "unknown field 'inputs'")


def test_wrong_types_name_the_field() -> None:
    load_error('{"pipeline": {"name": 3}}', "field 'pipeline.name' must be a string, got a number")
    load_error('{"transform": {"cmd": "ls"}}', "field 'transform.cmd' must be a list, got a string")
    load_error('{"transform": {"cmd": [1]}}', r"field 'transform.cmd\[0\]' must be a string")
    load_error('{"enable_stats": "yes"}', "field 'enable_stats' must be true or false")
    load_error('{"datum_tries": 1.5}', "field 'datum_tries' must be a whole number")
    load_error('{"parallelism_spec": {"constant": -1}}', "'parallelism_spec.constant' must not")
    load_error('{"input": "images"}', "field 'input' must be an object, got a string")
    load_error('{"transform": {"env": {"A": 1}}}', "field 'transform.env.A' must be a string")
    load_error('{"datum_timeout": 60}', "field 'datum_timeout' must be a duration string")
    load_error('{"datum_timeout": "soon"}', "field 'datum_timeout': invalid duration 'soon'")
    load_error(
        '{"input": {"cron": {"start": "yesterday"}}}',
        "field 'input.cron.start' must be an RFC 3339 time",
    )


def test_several_documents_say_which_one_is_wrong() -> None:
    load_error(EDGES + '{"pipelin": {}}', "pipeline spec #2: unknown field 'pipelin'")


def test_syntax_errors_give_line_and_column() -> None:
    msg = load_error('{\n  "pipeline": {"name": "x"},\n  "transform": }\n', "invalid JSON")
    assert "line 3, column 16" in msg
    msg = load_error(EDGES + "\n  garbage", "invalid JSON")
    assert "line 20, column 3" in msg
    msg = load_error("pipeline:\n  name: [x\ntransform: {}\n", "invalid YAML at line")
    assert "line 3" in msg


def test_not_a_spec() -> None:
    load_error("", "no pipeline spec found")
    load_error("   \n", "no pipeline spec found")
    load_error("[1, 2]", "expected an object")
    load_error("just words", "expected an object")
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        load_specs(b"\xff\xfe{}")


def test_source_names_the_file() -> None:
    with pytest.raises(InvalidArgument, match=r"^edges.json: unknown field 'x'$"):
        load_specs('{"x": 1}', source="edges.json")


# --- checking and defaults ------------------------------------------------------


def test_defaults_are_filled_in_and_the_request_is_left_alone() -> None:
    [req] = load_specs(MONTAGE)
    before = req.SerializeToString()
    out = check_spec(req)
    assert req.SerializeToString() == before
    assert out.output_branch == "master"
    assert out.datum_tries == 3
    assert out.parallelism_spec.constant == 1
    imgs, edges = atom_inputs(out.input)
    assert (imgs.name, imgs.branch) == ("imgs", "dev")
    assert (edges.name, edges.branch) == ("edges", "master")
    [tick] = cron_inputs(out.input)
    assert tick.repo == "montage_tick"
    assert not tick.HasField("start")  # the service decides when a cron starts


def test_given_values_are_kept() -> None:
    out = check_spec(spec(output_branch="out", datum_tries=1, parallelism_spec={"coefficient": 2}))
    assert out.output_branch == "out"
    assert out.datum_tries == 1
    assert out.parallelism_spec.coefficient == 2 and out.parallelism_spec.constant == 0


def test_input_walks_are_depth_first() -> None:
    out = check_spec(load_specs(MONTAGE)[0])
    assert input_names(out.input) == ["imgs", "edges", "tick"]
    assert input_branches(out) == [
        ("imgs", "images", "dev"),
        ("edges", "edges", "master"),
        ("tick", "montage_tick", "master"),
    ]
    # the same answer before normalization
    assert input_branches(load_specs(MONTAGE)[0]) == input_branches(out)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("", "pipeline.name is missing"),
        ("has space", "pipeline.name 'has space' is not a valid pipeline name"),
        ("a/b", "not a valid pipeline name"),
        ("x" * 49, "too long: 49 characters, at most 48"),
    ],
)
def test_bad_pipeline_names(name: str, match: str) -> None:
    invalid(spec(pipeline={"name": name}), match)


def test_good_pipeline_names() -> None:
    for name in ("a", "A-b_9", "x" * 48):
        assert check_spec(spec(pipeline={"name": name})).pipeline.name == name


def test_transform_is_required() -> None:
    invalid(spec(transform=None), "transform is missing")
    invalid(spec(transform={"image": "ubuntu"}), "transform.cmd is empty")
    invalid(spec(transform={"cmd": ["x"], "accept_return_code": [-1]}), "accept_return_code")


def test_input_is_required_and_has_exactly_one_kind() -> None:
    invalid(spec(input=None), "input is missing")
    invalid(spec(input={}), "input sets no input")
    invalid(spec(input={"cross": []}), "input sets no input")
    invalid(spec(input={"union": [{"atom": {"repo": "a", "glob": "/"}}, {}]}),
            r"input.union\[1\] sets no input")  # fmt: skip
    invalid(
        spec(input={"atom": {"repo": "a", "glob": "/"}, "cron": {"name": "c", "spec": "@daily"}}),
        r"input sets several inputs \(atom, cron\)",
    )


def test_git_inputs() -> None:
    # 1.7's defaults: the name is the repository's, the branch master.
    got = check_spec(spec(input={"git": {"URL": "https://github.com/a/b.git"}}))
    assert (got.input.git.name, got.input.git.branch) == ("b", "master")
    assert input_branches(got) == [("b", "b", "master")]
    assert spec_to_dict(got)["input"] == {
        "git": {"name": "b", "URL": "https://github.com/a/b.git", "branch": "master"}
    }
    invalid(spec(input={"git": {"branch": "master"}}), "git.url is missing")
    invalid(spec(input={"git": {"url": "not a url"}}), "is not a git URL")
    invalid(spec(input={"git": {"url": "-uhttps://x/y"}}), "is not a git URL")
    invalid(spec(input={"git": {"url": "https://x/p.git"}}), "pipeline's own output repo")
    invalid(spec(input={"git": {"url": "https://x/y", "commit": "abc"}}), "git.commit is set")
    invalid(spec(input={"git": {"url": "https://x/y", "branch": "a b"}}), "not a valid branch")


def test_git_url_policy() -> None:
    assert url_problem("https://github.com/a/b.git") is None
    assert url_problem("git@github.com:a/b.git") is None
    for bad in (
        "file:///etc/x",
        "/srv/x.git",
        "ext::sh -c id",
        "http://127.0.0.1/x",
        "http://localhost:80/x",
        "https://10.1.2.3/x",
        "http://[::1]/x",
        "git@127.0.0.1:a/b",
        "ftp://host/x",
    ):
        assert url_problem(bad) is not None, bad
    assert url_problem("http://127.0.0.1:9/x.git", ("http://127.0.0.1:9/",)) is None
    assert same_repository("https://github.com/a/b.git", "https://GitHub.com/a/b/")
    assert not same_repository("https://github.com/a/b", "https://github.com/a/c")


def test_input_names() -> None:
    invalid(spec(input={"atom": {"repo": "out", "glob": "/"}}), "cannot be 'out'")
    invalid(spec(input={"atom": {"name": "out", "repo": "a", "glob": "/"}}), "cannot be 'out'")
    invalid(spec(input={"atom": {"name": "a b", "repo": "a", "glob": "/"}}), "not a valid input")
    invalid(spec(input={"cron": {"spec": "@daily"}}), "input.cron.name is missing")
    atom = {"atom": {"repo": "a", "glob": "/"}}
    msg = invalid(spec(input={"cross": [atom, atom]}), "input name 'a' is used more than once")
    assert "input.cross[0].atom and input.cross[1].atom" in msg
    union = {"union": [{"atom": {"repo": "b", "name": "a", "glob": "/"}}]}
    invalid(spec(input={"cross": [atom, union]}), "used more than once")
    # the same repo twice under two names is fine
    twice = [atom, {"atom": {"repo": "a", "name": "a2", "glob": "/*"}}]
    assert input_names(check_spec(spec(input={"cross": twice})).input) == ["a", "a2"]


def test_union_members_may_share_a_name() -> None:
    """1.7: a datum of a union has one of its members, so several repos may
    all be mounted as /pfs/in; a name crossed with the union still clashes."""
    one = {"atom": {"repo": "r1", "name": "in", "glob": "/*"}}
    two = {"atom": {"repo": "r2", "name": "in", "glob": "/*"}}
    union = {"union": [one, two]}
    assert input_names(check_spec(spec(input=union)).input) == ["in", "in"]
    nested = {"union": [one, {"union": [two, {"atom": {"repo": "in", "glob": "/"}}]}]}
    check_spec(spec(input=nested))
    crossed = {"cross": [union, {"atom": {"repo": "x", "glob": "/"}}]}
    check_spec(spec(input=crossed))
    msg = invalid(spec(input={"cross": [union, {"atom": {"repo": "in", "glob": "/"}}]}), "'in'")
    assert "input.cross[0].union[0].atom and input.cross[1].atom" in msg
    # Inside one member the names must still differ.
    inner = {"union": [one, {"cross": [two, {"atom": {"repo": "r3", "name": "in", "glob": "/"}}]}]}
    msg = invalid(spec(input=inner), "used more than once")
    assert "input.union[1].cross[0].atom and input.union[1].cross[1].atom" in msg


def test_atom_inputs() -> None:
    invalid(spec(input={"atom": {"glob": "/"}}), "input.atom.repo is missing")
    invalid(spec(input={"atom": {"repo": "a"}}), "input.atom.glob is missing")
    invalid(spec(input={"atom": {"repo": "a/b", "glob": "/"}}), "not a valid repo name")
    invalid(spec(input={"atom": {"repo": "a", "branch": "x y", "glob": "/"}}), "branch name")
    invalid(spec(input={"atom": {"repo": "p", "glob": "/"}}), "cannot read its own output")
    invalid(spec(input={"atom": {"repo": "a", "glob": "/[a"}}), "'/\\[a' is not a valid glob")


def test_cron_inputs() -> None:
    invalid(spec(input={"cron": {"name": "t"}}), "input.cron.spec is missing")
    msg = invalid(spec(input={"cron": {"name": "t", "spec": "61 * * * *"}}), "input.cron.spec")
    assert "minute field '61'" in msg
    invalid(spec(input={"cron": {"name": "t", "spec": "@daily", "repo": "p"}}), "own output")
    out = check_spec(spec(input={"cron": {"name": "t", "spec": "@daily", "repo": "ticks"}}))
    assert out.input.cron.repo == "ticks"


def test_egress_urls() -> None:
    invalid(spec(egress={"URL": "http://x/y"}), "egress.URL 'http://x/y' is not")
    invalid(spec(egress={"URL": ""}), "egress.URL")
    invalid(spec(egress={"URL": "gs:///nobucket"}), "egress.URL 'gs:///nobucket' is not")
    for url in (
        "s3://bucket",
        "s3://bucket/",
        "s3://bucket/dir/sub",
        "gs://bucket/dir",
        "as://container/dir",
        "wasb://container@account.blob.core.windows.net/dir",
    ):
        out = check_spec(spec(egress={"URL": url}))
        assert url == out.egress.URL


def test_parallelism() -> None:
    invalid(spec(parallelism_spec={"constant": 2, "coefficient": 1}), "both constant and coeff")
    invalid(spec(parallelism_spec={"coefficient": -1}), "coefficient is -1.0")
    invalid(spec(service={"internal_port": 80}, parallelism_spec={"constant": 2}), "service")
    assert check_spec(spec(service={"internal_port": 80})).parallelism_spec.constant == 1


def test_negative_settings() -> None:
    invalid(spec(datum_timeout="-1s"), "datum_timeout is negative")
    invalid(spec(job_timeout="-1m"), "job_timeout is negative")
    invalid(spec(datum_tries=-1), "datum_tries is -1")
    invalid(spec(chunk_spec={"number": -1}), "chunk_spec.number is -1")
    invalid(spec(chunk_spec={"size_bytes": -5}), "chunk_spec.size_bytes is -5")
    invalid(spec(chunk_spec={"number": 1, "size_bytes": 5}), "both number and size_bytes")
    invalid(spec(output_branch="a b"), "output_branch 'a b'")


def test_incremental_inputs_cannot_share_provenance() -> None:
    atoms = [
        {"atom": {"repo": "a", "glob": "/"}},
        {"atom": {"repo": "a", "name": "b", "glob": "/"}},
    ]
    invalid(spec(incremental=True, input={"cross": atoms}), "share provenance")
    assert check_spec(spec(input={"cross": atoms})).input.cross[1].atom.name == "b"


def test_errors_name_the_pipeline_and_carry_the_field() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_spec(spec(datum_tries=-2))
    assert str(info.value).startswith("pipeline 'p': ")
    assert info.value.fields["field"] == "datum_tries"


# --- writing ------------------------------------------------------------------


def test_spec_json_uses_proto_names_and_leaves_defaults_out() -> None:
    out = check_spec(load_specs(EDGES)[0])
    data = spec_to_dict(out)
    assert data["datum_timeout"] == "90s"
    assert data["parallelism_spec"] == {"constant": 2}
    assert data["chunk_spec"] == {"number": 4}
    assert data["egress"] == {"URL": "s3://bucket/dir"}
    assert data["datum_tries"] == 3  # numbers stay numbers
    assert "update" not in data and "salt" not in data
    text = spec_to_json(out)
    assert text.startswith('{\n  "pipeline": {\n    "name": "edges"\n  },')
    assert json.loads(text) == data


@pytest.mark.parametrize("source", [EDGES, MONTAGE])
def test_round_trip(source: str) -> None:
    for req in (load_specs(source)[0], check_spec(load_specs(source)[0])):
        assert load_specs(spec_to_json(req)) == [req]


def test_round_trip_of_every_field_kind() -> None:
    req = check_spec(
        spec(
            scheduling_spec={"node_selector": {"disk": "ssd"}, "priority_class_name": "hi"},
            resource_limits={"cpu": 0.5, "memory": "1G", "gpu": 1},
            input={"cron": {"name": "t", "spec": "@daily", "start": "2018-01-01T00:00:00.5Z"}},
            update=True,
            reprocess=True,
            salt="abc",
            hashtree_spec={"constant": 2},
            pod_spec='{"a": 1}',
        )
    )
    assert load_specs(spec_to_json(req)) == [req]
    assert spec_to_dict(req)["input"] == {
        "cron": {"name": "t", "repo": "p_t", "spec": "@daily", "start": "2018-01-01T00:00:00.500Z"}
    }
