"""A seeded, bounded fuzz run over gRPC and HTTP against a real cluster.

Thousands of requests in about a minute and a half: messages of every
pfs/pps method filled with mutated names, paths, globs and specs (unicode,
control characters, huge fields, deep nesting), random bytes as protobuf,
and bad JSON / wrong types over HTTP. Every answer must be the client's
mistake or a success: no INTERNAL / UNKNOWN / 5xx (but 501 for a method
HTTP does not serve, like UNIMPLEMENTED over gRPC), and no hang (each request
has its own deadline). Afterwards the repos, branches and commits agree, no
commit is left open, and a plain put/get works.

``FUZZ_SEED``, ``FUZZ_SECONDS`` and ``FUZZ_REQUESTS`` change the run; the
figures are printed (``-s``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.api.pps import pps_pb2 as pps
from tests.support.cluster import Cluster

SEED = int(os.environ.get("FUZZ_SEED", "1729"))
SECONDS = float(os.environ.get("FUZZ_SECONDS", "90"))
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "9000"))
DEADLINE_S = 10.0  # per request: longer is a hang
REPOS = ("fz0", "fz1", "fz2")

# Methods that wait by design (for commits, jobs or log lines that may never
# come), wipe everything, or collect garbage: not fuzzed.
SKIP = {
    "FlushCommit",
    "SubscribeCommit",
    "FlushJob",
    "GetLogs",
    "DeleteAll",
    "GarbageCollect",
    "Compact",
    "ActivateAuth",
}
_F = FieldDescriptor
# UNAVAILABLE: nothing here depends on anything outside the cluster, so it
# means a service died; DEADLINE_EXCEEDED means a hang.
BAD_STATUS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
}


def _methods() -> list[tuple[str, MethodDescriptor]]:
    out = []
    for pkg, module in (("pfs", pfs), ("pps", pps)):
        service = module.DESCRIPTOR.services_by_name["API"]
        for m in service.methods:
            if m.name not in SKIP:
                out.append((pkg, m))
    return out


class Gen:
    """Seeded generators of hostile values."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def name(self) -> str:
        r = self.r
        pick = r.random()
        if pick < 0.35:
            return r.choice((*REPOS, "master", "nope", "p1"))
        if pick < 0.5:
            return "".join(r.choice("abcXYZ019_-") for _ in range(r.randint(1, 80)))
        return self.text()

    def text(self) -> str:
        r = self.r
        kinds = [
            lambda: "",
            lambda: "a\nb\r\nc",
            lambda: "\x00\x01\x1b[31m\x7f",
            lambda: "é☃𝄞\u202e\u200b日本",
            lambda: "x" * r.choice([64, 256, 4097, 70_000]),
            lambda: "../" * r.randint(1, 50),
            lambda: "%s%n{}{{}}[]*?\\",
            lambda: " ".join(r.choice(["rm", "-rf", "/", "$(id)", "`x`"]) for _ in range(5)),
            lambda: "".join(chr(r.randint(1, 0x2FFF)) for _ in range(r.randint(1, 40))),
            lambda: str(r.randint(-(2**63), 2**63)),
            lambda: "0" * 32,
            lambda: "".join(r.choice("0123456789abcdef") for _ in range(32)),
        ]
        return r.choice(kinds)()

    def path(self) -> str:
        r = self.r
        pick = r.random()
        if pick < 0.3:
            return "/" + "/".join(f"d{i}" for i in range(r.choice([1, 3, 600, 2100])))
        if pick < 0.45:
            return "/" + "c" * r.choice([255, 256, 5000])
        if pick < 0.6:
            return r.choice(["/", "", "//", "/a/../b", "/a/./b", "a/b/", "/*", "/**"])
        return "/" + self.text()

    def glob(self) -> str:
        r = self.r
        return r.choice(
            [
                "/*",
                "/**",
                "{" * 40 + "a" + "}" * 40,
                "[",
                "\\",
                "/a/{b,c/**}/*",
                "[!" + "a" * 300 + "]",
                self.path(),
                self.text(),
            ]
        )

    def value(self, field: Any, depth: int) -> Any:
        r = self.r
        t = field.type
        lowered = field.name.lower()
        if t == _F.TYPE_STRING:
            if "path" in lowered:
                return self.path()
            if "glob" in lowered or "pattern" in lowered:
                return self.glob()
            if lowered in ("name", "repo", "branch", "id", "pipeline"):
                return self.name()
            return self.text()
        if t == _F.TYPE_BYTES:
            return r.randbytes(r.choice([0, 3, 100, 5000]))
        if t == _F.TYPE_BOOL:
            return r.random() < 0.5
        if t in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
            return r.choice([0.0, -1.0, 1e300, float("nan"), float("inf")])
        if t == _F.TYPE_ENUM:
            values = [v.number for v in field.enum_type.values]
            return r.choice(values)
        if t in (_F.TYPE_UINT32, _F.TYPE_FIXED32):
            return r.choice([0, 1, 2**32 - 1])
        if t in (_F.TYPE_UINT64, _F.TYPE_FIXED64):
            return r.choice([0, 1, 2**64 - 1, 10**12])
        if t in (_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32):
            return r.choice([0, -1, 1, 2**31 - 1, -(2**31)])
        return r.choice([0, -1, 1, 2**63 - 1, -(2**63)])

    def fill(self, msg: Message, depth: int = 0) -> Message:
        r = self.r
        for field in msg.DESCRIPTOR.fields:
            if r.random() < 0.45:
                continue
            if field.message_type is not None:
                if field.message_type.GetOptions().map_entry:
                    mapping = getattr(msg, field.name)
                    for _ in range(r.randint(0, 2)):
                        with _quiet():
                            key = self.text()[:50]
                            vfield = field.message_type.fields_by_name["value"]
                            if vfield.message_type is None:
                                mapping[key] = self.value(vfield, depth)
                    continue
                if depth > 6 and r.random() < 0.8:
                    continue
                if field.is_repeated:
                    for _ in range(r.randint(0, 3)):
                        self.fill(getattr(msg, field.name).add(), depth + 1)
                else:
                    getattr(msg, field.name).SetInParent()
                    self.fill(getattr(msg, field.name), depth + 1)
                continue
            with _quiet():
                if field.is_repeated:
                    getattr(msg, field.name).extend(
                        self.value(field, depth) for _ in range(r.randint(0, 3))
                    )
                else:
                    setattr(msg, field.name, self.value(field, depth))
        return msg

    def message(self, descriptor: Descriptor) -> Message:
        return self.fill(GetMessageClass(descriptor)())

    def json_body(self, descriptor: Descriptor) -> bytes:
        r = self.r
        pick = r.random()
        if pick < 0.1:
            return r.randbytes(r.randint(1, 200))
        if pick < 0.2:
            return b"[" * r.choice([10, 100, 5000]) + b"]" * r.choice([0, 10, 5000])
        if pick < 0.3:
            return '{"x": "\ud800"}'.encode("utf-8", "surrogatepass")
        if pick < 0.4:
            return b'{"repo": {"name": ' + r.choice([b"1", b"[]", b"{}", b"true", b"null"]) + b"}}"
        if pick < 0.5:
            return json.dumps({f.name: self.text() for f in descriptor.fields}).encode()
        if pick < 0.55:
            return b'{"repo": ' * 2000
        try:
            return json_format.MessageToJson(self.message(descriptor)).encode()
        except Exception:
            return b"{}"


class _quiet:
    """Skip a value the protobuf runtime refuses on the client side."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return kind is not None and issubclass(kind, (ValueError, TypeError))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data: Path = tmp_path_factory.mktemp("fuzz") / "data"
    c = Cluster(data).start()
    try:
        c.wait_ready(timeout=180)
        yield c
    finally:
        c.kill()


class Run:
    def __init__(self, cluster: Cluster, channel: grpc.Channel) -> None:
        self.cluster = cluster
        self.channel = channel
        self.gen = Gen(SEED)
        self.methods = _methods()
        self.count = 0
        self.outcomes: Counter[str] = Counter()
        self.bad: list[str] = []
        self.conn = http.client.HTTPConnection("127.0.0.1", cluster.http_port, timeout=DEADLINE_S)

    def note(self, what: str, outcome: str, bad: bool) -> None:
        self.count += 1
        self.outcomes[outcome] += 1
        if bad:
            self.bad.append(f"{what}: {outcome}"[:400])

    def grpc_call(self, pkg: str, m: MethodDescriptor, payloads: list[bytes]) -> None:
        path = f"/{pkg}.API/{m.name}"
        kw: dict[str, Any] = {"request_serializer": None, "response_deserializer": None}
        try:
            if m.client_streaming and m.server_streaming:
                call: Any = self.channel.stream_stream(path, **kw)
                list(call(iter(payloads), timeout=DEADLINE_S))
            elif m.client_streaming:
                call = self.channel.stream_unary(path, **kw)
                call(iter(payloads), timeout=DEADLINE_S)
            elif m.server_streaming:
                call = self.channel.unary_stream(path, **kw)
                for _ in call(payloads[0], timeout=DEADLINE_S):
                    pass
            else:
                call = self.channel.unary_unary(path, **kw)
                call(payloads[0], timeout=DEADLINE_S)
            self.note(path, "OK", False)
        except grpc.RpcError as err:
            code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
            details = str(err.details())  # type: ignore[attr-defined]
            bad = code in BAD_STATUS or "\n" in details
            self.note(path, f"{code.name} {details[:200]!r}" if bad else code.name, bad)

    def http_call(self, method: str, url: str, body: bytes | None) -> None:
        try:
            self.conn.request(method, url, body=body, headers={"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            data = resp.read()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection(
                "127.0.0.1", self.cluster.http_port, timeout=DEADLINE_S
            )
            self.note(f"HTTP {method} {url[:80]}", f"no answer: {exc!r}", True)
            return
        bad = resp.status >= 500 and resp.status != 501  # 501: a documented refusal
        self.note(
            f"HTTP {method} {url[:80]}",
            f"{resp.status} {data[:200]!r}" if bad else str(resp.status),
            bad,
        )

    def one(self) -> None:
        r = self.gen.r
        pick = r.random()
        pkg, m = r.choice(self.methods)
        if pick < 0.45:  # a structured message with hostile fields
            msg = self.gen.message(m.input_type)
            try:
                payload = msg.SerializeToString()
            except Exception:
                return
            extra = [
                self.gen.message(m.input_type).SerializeToString() for _ in range(r.randint(0, 2))
            ]
            self.grpc_call(pkg, m, [payload, *extra])
        elif pick < 0.6:  # random bytes as protobuf
            blob = r.randbytes(r.choice([1, 7, 64, 1000]))
            self.grpc_call(pkg, m, [blob, r.randbytes(5)])
        elif pick < 0.65:  # truncated valid messages, or deep nesting
            valid = self.gen.message(m.input_type).SerializeToString()
            deep = b"".join(b"\x0a\xff\x01" for _ in range(r.choice([5, 200])))
            self.grpc_call(pkg, m, [r.choice([valid[: max(0, len(valid) - 1)], deep])])
        elif pick < 0.9:  # HTTP JSON API
            if m.client_streaming:
                return
            url = f"/api/{pkg}/{m.name}"
            self.http_call(r.choice(["POST", "POST", "GET"]), url, self.gen.json_body(m.input_type))
        else:  # HTTP file routes with hostile paths
            repo = r.choice((*REPOS, "nope"))
            path = self.gen.path().encode("utf-8", "surrogatepass")
            quoted = "".join(
                chr(b) if 0x21 <= b < 0x7F and b not in b"%?#" else f"%{b:02X}" for b in path
            )
            url = f"/pfs/{repo}/{r.choice(['master', 'nope', '0' * 32])}{quoted or '/'}"
            method = r.choice(["GET", "PUT", "POST"])
            self.http_call(
                method, url[:20000], r.randbytes(r.randint(0, 100)) if method != "GET" else None
            )


def test_fuzz_grpc_and_http(cluster: Cluster) -> None:
    with grpc.insecure_channel(
        f"127.0.0.1:{cluster.grpc_port}",
        options=[("grpc.max_send_message_length", 64 << 20)],
    ) as channel:
        api = pfs_pb2_grpc.APIStub(channel)
        for name in REPOS:
            api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name=name)), timeout=30)
        run = Run(cluster, channel)
        started = time.monotonic()
        while run.count < REQUESTS and time.monotonic() - started < SECONDS:
            run.one()
        elapsed = time.monotonic() - started
        print(
            f"\nfuzz seed={SEED}: {run.count} requests in {elapsed:.0f}s, "
            f"{len(run.bad)} misbehaved; outcomes: {dict(run.outcomes.most_common(12))}"
        )
        for line in sorted(set(run.bad))[:40]:
            print("  ", line)
        assert run.count >= min(REQUESTS, 1000)
        assert run.bad == []
        check_consistent(api)


def check_consistent(api: pfs_pb2_grpc.APIStub) -> None:
    """list-repo, inspect-repo, list-branch, list-commit agree; no commit is
    left open (the fuzzer never finishes what an accepted StartCommit opened,
    so those are finished here first); a plain put/get works."""
    repos = [r.repo.name for r in api.ListRepo(pfs.ListRepoRequest(), timeout=30).repo_info]
    assert len(repos) == len(set(repos))
    for name in repos:
        repo = pfs.Repo(name=name)
        assert api.InspectRepo(pfs.InspectRepoRequest(repo=repo), timeout=30).repo.name == name
        commits = api.ListCommit(pfs.ListCommitRequest(repo=repo), timeout=60).commit_info
        ids = {c.commit.id for c in commits}
        for info in commits:
            if not info.finished.seconds and not info.finished.nanos:
                api.FinishCommit(pfs.FinishCommitRequest(commit=info.commit), timeout=60)
        for branch in api.ListBranch(pfs.ListBranchRequest(repo=repo), timeout=30).branch_info:
            if branch.head.id:
                assert branch.head.id in ids, (name, branch.name)
                info = api.InspectCommit(pfs.InspectCommitRequest(commit=branch.head), timeout=30)
                assert info.commit.id == branch.head.id
        again = api.ListCommit(pfs.ListCommitRequest(repo=repo), timeout=60).commit_info
        assert all(c.finished.seconds or c.finished.nanos for c in again), name
    # (the fuzzer may have deleted every repo: DeleteRepo all=true is a fine request)
    with contextlib.suppress(grpc.RpcError):
        api.CreateRepo(pfs.CreateRepoRequest(repo=pfs.Repo(name="after")), timeout=30)
    head = pfs.Commit(repo=pfs.Repo(name="after"), id="master")
    req = pfs.PutFileRequest(file=pfs.File(commit=head, path="/after-fuzz"), value=b"still fine")
    api.PutFile(iter([req]), timeout=30)
    got = api.GetFile(
        pfs.GetFileRequest(file=pfs.File(commit=head, path="/after-fuzz")), timeout=30
    )
    assert b"".join(v.value for v in got) == b"still fine"
