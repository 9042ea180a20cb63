"""The rest of pachctl's file commands through the real pachctl against a
cluster: put-file of many files in one commit (-p), from URLs (a tiny aiohttp
server started here), --split; put-header/put-footer; copy-file; diff-file;
get-file -r; list-file's streamed table; glob-file; inspect-file of a
directory; and one-line errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.integration.test_pachctl_files import ok, pachctl
from tests.support.cluster import Cluster, running


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # The test's HTTP server is on loopback, which put-file refuses unless allowed.
    data = Path(tmp_path_factory.mktemp("file-ops")) / "data"
    yield from running(data, PACH_URL_ALLOW="127.0.0.1")


def fails(done: subprocess.CompletedProcess[bytes], message: str) -> str:
    err = done.stderr.decode().strip()
    assert done.returncode == 1, err
    assert len(err.splitlines()) == 1 and message in err, err
    return err


def rows(text: bytes) -> list[list[str]]:
    """A NAME TYPE SIZE table's rows (the header checked and dropped)."""
    lines = text.decode().splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "SIZE"], lines
    return [ln.split() for ln in lines[1:]]


def commits(cluster: Cluster, repo: str) -> int:
    return len(ok(pachctl(cluster, "list-commit", repo)).decode().splitlines()) - 1


# --- a tiny HTTP server for put-file -f http://… ---------------------------------


class HttpFiles:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = self.files.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound()
        return web.Response(body=body)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/{name:.*}", self._handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> HttpFiles:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# --- put-file --------------------------------------------------------------------


def test_many_files_in_one_invocation_make_one_commit(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "many"))
    src = tmp_path / "src"
    expected: dict[str, bytes] = {}
    for n in range(30):
        sub = src / f"d{n % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        data = os.urandom(n * 10_000 + n)  # 0 bytes … ~290 KB
        (sub / f"f{n}").write_bytes(data)
        expected[f"d{n % 3}/f{n}"] = data
    (src / "big").write_bytes(big := os.urandom(2 * 1024 * 1024 + 3))
    expected["big"] = big
    ok(pachctl(cluster, "put-file", "many", "master", "/", "-r", "-p", "4", "-f", str(src)))
    ok(pachctl(cluster, "put-file", "many", "master", "-f", "-", "/x", stdin=b""))  # 2nd commit
    assert commits(cluster, "many") == 2  # 31 files, one commit; then one more

    # get-file -r brings the tree back byte for byte (in parallel).
    out = tmp_path / "out"
    ok(pachctl(cluster, "get-file", "many", "master^", "/", "-r", "-o", str(out), "-p", "3"))
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got.keys() == expected.keys()
    for name, data in expected.items():
        assert hashlib.sha256(got[name]).digest() == hashlib.sha256(data).digest(), name

    # A subdirectory, and -r on a single file.
    sub_out = tmp_path / "sub"
    ok(pachctl(cluster, "get-file", "many", "master", "/d1", "-r", "-o", str(sub_out)))
    assert sorted(p.name for p in sub_out.iterdir()) == sorted(
        f"f{n}" for n in range(30) if n % 3 == 1
    )
    one = tmp_path / "one"
    ok(pachctl(cluster, "get-file", "many", "master", "/big", "-r", "-o", str(one)))
    assert one.read_bytes() == big

    # A directory without -r: says how to download it.
    fails(pachctl(cluster, "get-file", "many", "master", "/d0"), "-r -o")


def test_repeatable_f_and_default_names(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "names"))
    (tmp_path / "a.txt").write_bytes(b"A")
    (tmp_path / "b.txt").write_bytes(b"B")
    ok(
        pachctl(
            cluster, "put-file", "names", "master", "/p", "-f", "a.txt", "-f", "b.txt",
            cwd=tmp_path,
        )
    )  # fmt: skip
    ok(pachctl(cluster, "put-file", "names", "master", "-f", "a.txt", "-c", cwd=tmp_path))
    assert rows(ok(pachctl(cluster, "list-file", "names", "master", "/p"))) == [
        ["/p/a.txt", "file", "1B"],
        ["/p/b.txt", "file", "1B"],
    ]
    assert ok(pachctl(cluster, "get-file", "names", "master", "/a.txt")) == b"A"


def test_put_file_from_urls(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "urls"))
    body = os.urandom(1024 * 1024 + 11)
    with HttpFiles({"data/blob.bin": body, "small.txt": b"small\n"}) as http:
        ok(pachctl(cluster, "put-file", "urls", "master", "/named", "-f", http.url("small.txt")))
        # no path: the URL's path names the file; several -f, one commit
        (tmp_path / "local").write_bytes(b"L")
        ok(
            pachctl(
                cluster, "put-file", "urls", "master",
                "-f", http.url("data/blob.bin"), "-f", str(tmp_path / "local"),
            )
        )  # fmt: skip
        missing = pachctl(cluster, "put-file", "urls", "master", "/m", "-f", http.url("nope"))
        assert missing.returncode == 1 and len(missing.stderr.splitlines()) == 1
        assert b"cannot reach pachd" not in missing.stderr, missing.stderr
        # -i: the sources listed in a file that is itself at a URL
        http.files["list"] = f"{http.url('small.txt')}\n{http.url('data/blob.bin')}\n".encode()
        ok(pachctl(cluster, "put-file", "urls", "master", "/listed", "-i", http.url("list")))
    assert ok(pachctl(cluster, "get-file", "urls", "master", "/named")) == b"small\n"
    got = ok(pachctl(cluster, "get-file", "urls", "master", "/data/blob.bin"))
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert ok(pachctl(cluster, "get-file", "urls", "master", str(tmp_path / "local"))) == b"L"
    assert ok(pachctl(cluster, "get-file", "urls", "master", "/listed/small.txt")) == b"small\n"
    got = ok(pachctl(cluster, "get-file", "urls", "master", "/listed/data/blob.bin"))
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    assert commits(cluster, "urls") == 3


def test_split_lines_and_json(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "split"))
    lines = b"".join(b"line %d\n" % n for n in range(10))
    (tmp_path / "lines").write_bytes(lines)
    ok(
        pachctl(
            cluster, "put-file", "split", "master", "/lines", "-f", str(tmp_path / "lines"),
            "--split", "line", "--target-file-datums", "3",
        )
    )  # fmt: skip
    pieces = rows(ok(pachctl(cluster, "list-file", "split", "master", "/lines")))
    assert len(pieces) == 4 and all(r[1] == "file" for r in pieces)
    assert [r[2] for r in pieces] == ["21B", "21B", "21B", "7B"]
    joined = b"".join(ok(pachctl(cluster, "get-file", "split", "master", r[0])) for r in pieces)
    assert joined == lines

    docs = b"".join(json.dumps({"n": n}).encode() + b"\n" for n in range(4))
    ok(
        pachctl(
            cluster, "put-file", "split", "master", "/json", "--split", "json",
            "--target-file-datums", "1", "-f", "-", stdin=docs,
        )
    )  # fmt: skip
    pieces = rows(ok(pachctl(cluster, "list-file", "split", "master", "/json")))
    assert len(pieces) == 4
    first = json.loads(ok(pachctl(cluster, "get-file", "split", "master", pieces[0][0])))
    assert first == {"n": 0}


def test_put_header_and_footer(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "csv"))
    ok(
        pachctl(
            cluster, "put-file", "csv", "master", "/rows", "--split", "line",
            "--target-file-datums", "1", "-f", "-", stdin=b"1,2\n3,4\n",
        )
    )  # fmt: skip
    (tmp_path / "header").write_bytes(b"a,b\n")
    ok(pachctl(cluster, "put-header", "csv", "master", "/rows", "-f", str(tmp_path / "header")))
    ok(pachctl(cluster, "put-footer", "csv", "master", "/rows", stdin=b"-- end\n"))
    pieces = rows(ok(pachctl(cluster, "list-file", "csv", "master", "/rows")))
    assert len(pieces) == 2
    # A child reads wrapped in its directory's header and footer; the directory
    # itself reads as just the two (1.7's getFile).
    child = ok(pachctl(cluster, "get-file", "csv", "master", pieces[1][0]))
    assert child == b"a,b\n3,4\n-- end\n"
    assert ok(pachctl(cluster, "get-file", "csv", "master", "/rows")) == b"a,b\n-- end\n"
    # get-file -r writes every child that way.
    out = tmp_path / "rows"
    ok(pachctl(cluster, "get-file", "csv", "master", "/rows", "-r", "-o", str(out)))
    assert sorted(p.read_bytes() for p in out.iterdir()) == [
        b"a,b\n1,2\n-- end\n",
        b"a,b\n3,4\n-- end\n",
    ]
    # A directory with neither cannot be read: get-file says to use -r -o.
    ok(pachctl(cluster, "put-file", "csv", "master", "/plain/x", "-f", "-", stdin=b"x"))
    fails(pachctl(cluster, "get-file", "csv", "master", "/plain"), "use get-file -r -o")


def test_copy_file(cluster: Cluster) -> None:
    ok(pachctl(cluster, "create-repo", "csrc"))
    ok(pachctl(cluster, "create-repo", "cdst"))
    ok(pachctl(cluster, "put-file", "csrc", "master", "/dir/a", "-f", "-", stdin=b"aa"))
    ok(pachctl(cluster, "put-file", "csrc", "master", "/dir/b", "-f", "-", stdin=b"bbb"))
    ok(pachctl(cluster, "put-file", "cdst", "master", "/f", "-f", "-", stdin=b"old"))
    ok(pachctl(cluster, "start-commit", "cdst", "master"))
    ok(pachctl(cluster, "copy-file", "csrc", "master", "/dir", "cdst", "master", "/copy"))
    ok(pachctl(cluster, "copy-file", "csrc", "master", "/dir/a", "cdst", "master", "/f"))
    ok(pachctl(cluster, "finish-commit", "cdst", "master"))
    assert ok(pachctl(cluster, "get-file", "cdst", "master", "/copy/b")) == b"bbb"
    assert ok(pachctl(cluster, "get-file", "cdst", "master", "/f")) == b"oldaa"  # appended

    ok(pachctl(cluster, "start-commit", "cdst", "master"))
    ok(pachctl(cluster, "copy-file", "csrc", "master", "/dir/b", "cdst", "master", "/f", "-o"))
    ok(pachctl(cluster, "finish-commit", "cdst", "master"))
    assert ok(pachctl(cluster, "get-file", "cdst", "master", "/f")) == b"bbb"  # overwritten


def test_diff_file(cluster: Cluster) -> None:
    ok(pachctl(cluster, "create-repo", "diff"))
    ok(pachctl(cluster, "start-commit", "diff", "master"))
    for name, data in (("same", b"s"), ("changed", b"v1"), ("gone", b"g")):
        ok(pachctl(cluster, "put-file", "diff", "master", f"/{name}", "-f", "-", stdin=data))
    ok(pachctl(cluster, "finish-commit", "diff", "master"))
    ok(pachctl(cluster, "start-commit", "diff", "master"))
    ok(pachctl(cluster, "put-file", "diff", "master", "/changed", "-o", "-f", "-", stdin=b"v22"))
    ok(pachctl(cluster, "put-file", "diff", "master", "/added", "-f", "-", stdin=b"new!"))
    ok(pachctl(cluster, "delete-file", "diff", "master", "/gone"))
    ok(pachctl(cluster, "finish-commit", "diff", "master"))

    text = ok(pachctl(cluster, "diff-file", "diff", "master", "/")).decode()
    lines = text.splitlines()
    assert lines[0] == "New Files:"
    old_at = lines.index("Old Files:")
    new = sorted(ln.split() for ln in lines[2:old_at])
    old = sorted(ln.split() for ln in lines[old_at + 2 :])
    assert lines[1].split() == lines[old_at + 1].split() == ["NAME", "TYPE", "SIZE"]
    assert new == [["/added", "file", "4B"], ["/changed", "file", "3B"]]
    assert old == [["/changed", "file", "2B"], ["/gone", "file", "1B"]]

    # Six arguments: against an explicit commit; nothing differs from itself.
    same = ok(pachctl(cluster, "diff-file", "diff", "master", "/", "diff", "master", "/"))
    assert same == b""
    shallow = ok(pachctl(cluster, "diff-file", "diff", "master", "/", "diff", "master^", "/", "-s"))
    assert b"New Files:" in shallow
    fails(pachctl(cluster, "diff-file", "diff", "master", "/", "diff"), "expects either 3 or 6")


def test_list_file_streams_a_long_table(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "wide"))
    src = tmp_path / "w"
    src.mkdir()
    for n in range(120):
        (src / f"f{n:03d}").write_bytes(b"x" * n)
    (src / "sub").mkdir()
    (src / "sub" / "inner").write_bytes(b"12345")
    ok(pachctl(cluster, "put-file", "wide", "master", "/w", "-r", "-f", str(src)))
    lines = ok(pachctl(cluster, "list-file", "wide", "master", "/w")).decode().splitlines()
    # 1.7's tabwriter prints the header again every 50 lines
    assert [i for i, ln in enumerate(lines) if ln.split() == ["NAME", "TYPE", "SIZE"]] == [
        0,
        50,
        100,
    ]
    listed = [ln.split() for ln in lines if not ln.startswith("NAME")]
    assert len(listed) == 121
    assert listed[0] == ["/w/f000", "file", "0B"]
    assert ["/w/sub", "dir", "5B"] in listed
    # Go's tabwriter(0, 1, 1): the NAME column is as wide as the widest name + 1.
    assert lines[1].startswith("/w/f000 file ")

    raw = ok(pachctl(cluster, "list-file", "wide", "master", "/w/sub", "--raw")).decode()
    assert json.loads(raw)["file"]["path"] == "/w/sub/inner"
    globbed = rows(ok(pachctl(cluster, "glob-file", "wide", "master", "/w/f11*")))
    assert [r[0] for r in globbed] == [f"/w/f11{n}" for n in range(10)]

    info = ok(pachctl(cluster, "inspect-file", "wide", "master", "/w/sub")).decode()
    assert info.splitlines() == ["Path: /w/sub", "Type: dir", "Size: 5B", "Children:  inner "]


def test_bad_input_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    ok(pachctl(cluster, "create-repo", "bad"))
    fails(pachctl(cluster, "copy-file", "bad", "master", "/x"), "the following arguments")
    fails(pachctl(cluster, "get-file", "bad", "master", "/x", "-r"), "output path")
    fails(pachctl(cluster, "put-file", "bad", "master", "/x", "--split", "csv"), "delimiter")
    fails(pachctl(cluster, "put-file", "bad", "master", "/x", "-f", "nope"), "no such file")
    fails(pachctl(cluster, "list-file", "bad", "master", "/nothing"), "NOT_FOUND")
    fails(pachctl(cluster, "inspect-file", "norepo", "master", "/x"), "NOT_FOUND")
    fails(
        pachctl(cluster, "copy-file", "bad", "master", "/none", "bad", "master", "/y"), "NOT_FOUND"
    )
    fails(pachctl(cluster, "put-header", "bad", "master", "/d", "-f", str(tmp_path / "no")), "no")
    assert commits(cluster, "bad") == 0
