"""Git inputs' push webhook (Pachyderm 1.7's githook): a GitHub push
payload, signed with the cluster's webhook secret, becomes a commit in the
input repo of every pipeline whose git input names the pushed repository
and branch.

* ``verify(secret, body, headers)``: the ``X-Hub-Signature-256``
  (HMAC-SHA256) or ``X-Hub-Signature`` (HMAC-SHA1) header must match the
  body; Unauthenticated without one, PermissionDenied for a wrong one or
  when the cluster holds no secret.
* ``parse_push(body, content_type)``: ``ref``, ``after`` and the
  repository's URLs (``clone_url``, ``url``, ``git_url``, ``ssh_url``).
* ``GitFetcher.tree(url, branch, sha)``: ``git`` in a subprocess fetches
  that commit into a fresh bare repository in a temporary directory, and
  ``git archive`` writes its tree out there (never the service's working
  tree); the files are read one by one in blocks, stored with the file
  writer, and built into a ``libs.trees`` tree (regular files only, at
  the repo root, without ``.git``; symlinks are left out).
* ``handle_push``: the commit is a pfs ``BuildCommit`` on the input's
  branch, unless the branch's head already holds the same tree (a
  redelivered push changes nothing); its id derives from the branch's
  head and the pushed sha, so two deliveries racing make one commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import structlog

from libs import trees
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pps import pps_pb2 as pps
from libs.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from libs.filedata.writer import FileWriter
from libs.objects import ObjectStore
from libs.pps.git import allowed_prefixes, same_repository, url_problem
from libs.pps.spec import git_inputs
from libs.trees.model import Op, Put
from services.gateway.principal import Ask

_log = structlog.get_logger("gateway.githook")

SECRET_ENV = "PACH_GIT_WEBHOOK_SECRET"
TIMEOUT_ENV = "PACH_GIT_FETCH_TIMEOUT_S"
PATH = "/v1/handle/push"
BLOCK = 1 << 20
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


@dataclass(frozen=True)
class GithookConfig:
    secret: bytes = b""
    allowed: tuple[str, ...] = ()
    fetch_timeout_s: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GithookConfig:
        e: Mapping[str, str] = os.environ if env is None else env
        raw = e.get(TIMEOUT_ENV, "") or "300"
        try:
            timeout = float(raw)
        except ValueError:
            raise InvalidArgument(f"{TIMEOUT_ENV} must be a number, got {raw!r}") from None
        return cls(e.get(SECRET_ENV, "").encode(), allowed_prefixes(e), timeout)


# --- the request ----------------------------------------------------------------


def verify(secret: bytes, body: bytes, headers: Mapping[str, str]) -> None:
    """Check the push's signature (see the module doc)."""
    if not secret:
        raise PermissionDenied(
            f"the git webhook is disabled: the cluster holds no secret (set {SECRET_ENV})"
        )
    for header, algo in (("X-Hub-Signature-256", "sha256"), ("X-Hub-Signature", "sha1")):
        given = headers.get(header)
        if given is None:
            continue
        expected = f"{algo}=" + hmac.new(secret, body, algo).hexdigest()
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise PermissionDenied(f"{header} does not match the body: wrong secret or payload")
        return
    raise Unauthenticated("the push is not signed: X-Hub-Signature-256 or X-Hub-Signature needed")


@dataclass(frozen=True)
class Push:
    ref: str
    after: str
    urls: tuple[str, ...]

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None


def parse_push(body: bytes, content_type: str) -> Push:
    """The push payload (JSON, or GitHub's form encoding: ``payload=<json>``)."""
    text = body.decode("utf-8", "replace")
    if content_type.startswith("application/x-www-form-urlencoded"):
        text = (parse_qs(text).get("payload") or [""])[0]
    try:
        data = json.loads(text)
    except ValueError:
        raise InvalidArgument("the push payload is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("the push payload is not a JSON object")
    ref, after, repo = data.get("ref"), data.get("after"), data.get("repository")
    if not isinstance(ref, str) or not isinstance(after, str) or not isinstance(repo, dict):
        raise InvalidArgument("the push payload needs ref, after and repository")
    urls = tuple(
        u for k in ("clone_url", "url", "git_url", "ssh_url") if isinstance(u := repo.get(k), str)
    )
    if not urls:
        raise InvalidArgument("the push payload's repository has no clone_url or url")
    return Push(ref, after.lower(), urls)


# --- fetching -------------------------------------------------------------------


def _git_env(home: Path, local: bool) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ASKPASS": "/bin/false",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
        "GIT_ALLOW_PROTOCOL": "http:https:git:ssh" + (":file" if local else ""),
    }


def _local(url: str) -> bool:
    """A ``file://`` URL or a path (fetched only when the allow-list says so)."""
    return url.startswith(("file://", "/", "./", "../"))


@dataclass
class GitFetcher:
    timeout_s: float = 300.0
    scratch: Path | None = None

    async def _git(self, cwd: Path, *args: str, local: bool = False) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            "git",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            f"protocol.file.allow={'always' if local else 'never'}",
            *args,
            cwd=cwd,
            env=_git_env(cwd, local),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise Unavailable(f"git {args[0]} took longer than {self.timeout_s:g}s") from None
        if proc.returncode != 0:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise Unavailable(f"git {args[0]} failed: {last[0][:300]}")
        return out

    async def checkout(self, url: str, branch: str, sha: str, into: Path) -> Path:
        """The tree of ``sha`` (fetched from ``url``'s ``branch``) written out
        under ``into/tree``."""
        git = into / "git"
        git.mkdir()
        await self._git(git, "init", "-q", "--bare", ".")
        local = _local(url)
        try:
            ref = f"refs/heads/{branch}"
            await self._git(git, "fetch", "-q", "--no-tags", "--", url, ref, local=local)
            await self._git(git, "cat-file", "-e", f"{sha}^{{commit}}")
        except Unavailable:
            # Not on the branch (any more): ask for the commit itself.
            await self._git(git, "fetch", "-q", "--no-tags", "--", url, sha, local=local)
        archive = into / "tree.tar"
        await self._git(git, "archive", "--format=tar", "-o", str(archive), sha)
        tree = into / "tree"
        tree.mkdir()
        await asyncio.to_thread(_extract, archive, tree)
        archive.unlink()
        return tree


def _extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


def _files(root: Path) -> Iterator[str]:
    """Regular files under ``root`` as tree paths, one at a time."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            full = Path(dirpath) / name
            if full.is_file() and not full.is_symlink():
                yield "/" + full.relative_to(root).as_posix()


async def _blocks(path: Path) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(path.open, "rb")
    try:
        while block := await asyncio.to_thread(f.read, BLOCK):
            yield block
    finally:
        f.close()


async def build_tree(store: ObjectStore, root: Path) -> trees.TreeRoot:
    """The files under ``root`` as a stored tree, each file stored as it is
    read (the tree builder sorts the paths, spilling to disk)."""
    writer = FileWriter(store)

    async def ops() -> AsyncIterator[Op]:
        for path in _files(root):
            refs = await writer.write_file(_blocks(root / path.lstrip("/")))
            yield Put(path=path, refs=tuple(refs))

    built = await trees.build(store, None, ops())
    await writer.flush()  # packed refs are durable before anyone sees the tree
    return built


def _commit_id(target: Target, basis: str, sha: str) -> str:
    """The id of the commit made for ``sha`` on top of ``basis`` (the
    branch's head then): two deliveries of one push make one commit."""
    key = f"{target.repo}\0{target.branch}\0{basis}\0{sha}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


# --- the push -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    repo: str
    branch: str
    url: str


async def targets(ask: Ask, push: Push) -> list[Target]:
    """The git inputs (repo, branch, URL) that this push is for."""
    infos = await ask("ListPipeline", pps.ListPipelineRequest(), pps.PipelineInfos, "qry")
    found: dict[tuple[str, str], Target] = {}
    for info in infos.pipeline_info:
        for git in git_inputs(info.input):
            if git.branch != push.branch:
                continue
            if any(same_repository(git.url, u) for u in push.urls):
                found.setdefault((git.name, git.branch), Target(git.name, git.branch, git.url))
    return [found[k] for k in sorted(found)]


@dataclass
class PushHandler:
    ask_pfs: Ask
    ask_pps: Ask
    store: ObjectStore
    config: GithookConfig
    fetcher: GitFetcher = field(default_factory=GitFetcher)

    async def handle(self, push: Push) -> list[dict[str, str]]:
        """Commit the pushed tree into every matching input repo; the commits
        made (repo, branch, commit, sha)."""
        if push.branch is None or set(push.after) == {"0"}:
            return []  # a tag, or a deleted branch: nothing to fetch
        if not _SHA.match(push.after):
            raise InvalidArgument(f"the push's after {push.after!r} is not a commit sha")
        done: list[dict[str, str]] = []
        for target in await targets(self.ask_pps, push):
            problem = url_problem(target.url, self.config.allowed)
            if problem is not None:
                raise PermissionDenied(problem)
            commit = await self._commit(target, push.after)
            done.append(
                {"repo": target.repo, "branch": target.branch, "commit": commit, "sha": push.after}
            )
        return done

    async def _commit(self, target: Target, sha: str) -> str:
        head = await self._head(target)
        if head is not None:
            parent = head.parent_commit.id if head.HasField("parent_commit") else ""
            if head.commit.id == _commit_id(target, parent, sha):
                return head.commit.id  # this push is the head already (a redelivery)
        basis = head.commit.id if head is not None else ""
        scratch = Path(tempfile.mkdtemp(prefix="pach-githook-", dir=self.fetcher.scratch))
        try:
            checkout = await self.fetcher.checkout(target.url, target.branch, sha, scratch)
            root = await build_tree(self.store, checkout)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        req = pfs.BuildCommitRequest(
            parent=pfs.Commit(repo=pfs.Repo(name=target.repo)),
            branch=target.branch,
            ID=_commit_id(target, basis, sha),
        )
        req.tree.CopyFrom(pfs.Object(hash=root.hash))
        try:
            made = await self.ask_pfs("BuildCommit", req, pfs.Commit, "cmd")
        except AlreadyExists:
            return req.ID
        _log.info("git push committed", repo=target.repo, branch=target.branch, sha=sha)
        return made.id

    async def _head(self, target: Target) -> pfs.CommitInfo | None:
        req = pfs.InspectCommitRequest(
            commit=pfs.Commit(repo=pfs.Repo(name=target.repo), id=target.branch)
        )
        try:
            info = await self.ask_pfs("InspectCommit", req, pfs.CommitInfo, "qry")
        except NotFound:
            return None
        return info
