"""NATS credentials of the embedded cluster: one user per service, one for
the pipeline workers and one for the operator, each with only the subjects
it needs (docs/decisions/0016-nats-credentials.md).

The launcher creates them at first start in ``<data_dir>/nats-credentials.json``
(mode 0600, never logged) and writes the server's ``authorization`` block
with bcrypt hashes only. Each service gets its own user and password in
``PACH_NATS_USER`` / ``PACH_NATS_PASSWORD``; pps also gets the workers' in
``PACH_NATS_WORKER_USER`` / ``PACH_NATS_WORKER_PASSWORD`` and hands it to the
workers it starts. No user may delete, change or purge a stream, except pps
purging its own work queue (``PPS_WORK``) when a pipeline's jobs are dropped
and the admin service deleting or updating the event stream (restore).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from libs.errors import FailedPrecondition

FILE_NAME = "nats-credentials.json"
BACKENDS = ("pfs", "pps", "auth", "enterprise", "admin")
GATEWAY = "gateway"
WORKER = "pps-worker"
OPERATOR = "operator"
ROLES: tuple[str, ...] = (*BACKENDS, GATEWAY, WORKER, OPERATOR)
# bcrypt cost: the passwords are 32 random bytes, so a higher cost adds
# nothing against guessing; it would only slow every connect (nats-server
# checks the hash each time) and the launcher's start.
BCRYPT_COST = 4


@dataclass(frozen=True)
class Credential:
    user: str
    password: str

    def __repr__(self) -> str:  # never print the password
        return f"Credential(user={self.user!r})"


def inbox_prefix(user: str) -> str:
    """Each user's replies arrive under its own inbox prefix, which only it
    may subscribe to (libs/service.py connects with it)."""
    return f"_INBOX.{user}"


# JetStream API calls every backend makes: create its streams (never change
# or remove one), read stream info and messages, use consumers.
_JS_READ_AND_CONSUME = [
    "$JS.API.INFO",
    "$JS.API.STREAM.CREATE.*",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.STREAM.NAMES",
    "$JS.API.STREAM.LIST",
    "$JS.API.STREAM.MSG.GET.*",
    "$JS.API.DIRECT.GET.>",
    "$JS.API.CONSUMER.>",
    "$JS.ACK.>",
    "$JS.FC.>",
    "$KV.>",
]
# Nobody removes a stream or its messages (a deny wins over any allow),
# except the admin path: a restore replaces an empty event stream of another
# cluster, and admin stamps the cluster's id on an older one.
_DENY_ALL = [
    "$JS.API.STREAM.MSG.DELETE.>",
    "$JS.API.STREAM.RESTORE.>",
]
_DENY_CHANGE = ["$JS.API.STREAM.DELETE.>", "$JS.API.STREAM.UPDATE.>"]


def permissions(role: str, *, events_stream: str = "EVENTS") -> dict[str, object]:
    """The NATS permissions of ``role`` (the ``permissions`` map of a user)."""
    user = role
    inbox = f"{inbox_prefix(user)}.>"
    own = [f"cmd.{role}.>", f"qry.{role}.>", f"note.{role}.>"]
    pub: list[str]
    sub: list[str]
    if role in BACKENDS:
        events = "ev.>" if role == "admin" else f"ev.{role}.>"
        pub = ["cmd.>", "qry.>", "note.>", events, *_JS_READ_AND_CONSUME]
        sub = [*own, inbox, "ev.>"]
        if role == "pps":
            pub += ["pps.work.>", "pps.logs.>", "$JS.API.STREAM.PURGE.PPS_WORK"]
        if role == "admin":
            pub += [
                f"$JS.API.STREAM.DELETE.{events_stream}",
                f"$JS.API.STREAM.UPDATE.{events_stream}",
            ]
    elif role == GATEWAY:
        # Commands and queries, and reading the event log (never appending):
        # it authenticates every call from its own view of the auth events.
        es = events_stream
        pub = [
            "cmd.>",
            "qry.>",
            "$JS.API.INFO",
            f"$JS.API.STREAM.INFO.{es}",
            f"$JS.API.STREAM.MSG.GET.{es}",
            f"$JS.API.DIRECT.GET.{es}.>",
            f"$JS.API.CONSUMER.CREATE.{es}",
            f"$JS.API.CONSUMER.CREATE.{es}.>",
            f"$JS.API.CONSUMER.INFO.{es}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{es}.>",
            f"$JS.API.CONSUMER.DELETE.{es}.>",
        ]
        # The dashboard's change feed: which repo, commit, pipeline or job
        # changed (plain subscriptions to the event subjects, read-only).
        feed = ["ev.pfs.repo.*", "ev.pfs.commit.*", "ev.pps.pipeline.*", "ev.pps.job.*"]
        sub = [*own, inbox, *feed]
    elif role == WORKER:
        # Its pipeline's chunks (PPS_WORK), its log lines (PPS_LOGS), its
        # spec and its reports (pps): never the event log.
        pub = [
            "qry.pps.GetPipelineSpec",
            "cmd.pps.ChunkDone",
            "pps.logs.>",
            "$JS.API.INFO",
            "$JS.API.STREAM.CREATE.PPS_WORK",
            "$JS.API.STREAM.CREATE.PPS_LOGS",
            "$JS.API.CONSUMER.CREATE.PPS_WORK.>",
            "$JS.API.CONSUMER.DURABLE.CREATE.PPS_WORK.>",
            "$JS.API.CONSUMER.INFO.PPS_WORK.>",
            "$JS.API.CONSUMER.MSG.NEXT.PPS_WORK.>",
            "$JS.ACK.PPS_WORK.>",
        ]
        sub = [*own, inbox]
    elif role == OPERATOR:
        # A person's (and the tests') way in: everything but removing data.
        pub = [">"]
        sub = [">"]
    else:
        raise ValueError(f"no NATS role {role!r}")
    deny = list(_DENY_ALL)
    if role == "admin":
        others = ("PPS_WORK", "PPS_LOGS", "KV_PACH_CLUSTER", "KV_PPS_MASTERS")
        deny += [f"$JS.API.STREAM.{op}.{s}" for op in ("DELETE", "UPDATE") for s in others]
    else:
        deny += _DENY_CHANGE
    if role != "pps":
        deny.append("$JS.API.STREAM.PURGE.>")
    else:
        deny += [f"$JS.API.STREAM.PURGE.{s}" for s in (events_stream, "PPS_LOGS")]
    return {
        "publish": {"allow": pub, "deny": deny},
        "subscribe": {"allow": sub},
        # Replies to requests it received (one each), wherever they go.
        "allow_responses": True,
    }


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner can read, then move it in."""
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def load_or_create(data_dir: Path) -> dict[str, Credential]:
    """The cluster's credentials: read from the data dir, or made (and
    saved, mode 0600) at first start. A role missing from an older file is
    added."""
    path = data_dir / FILE_NAME
    stored: dict[str, str] = {}
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        try:
            raw = json.loads(path.read_text())
            stored = {str(k): str(v) for k, v in dict(raw["passwords"]).items()}
        except (ValueError, KeyError, TypeError):
            raise FailedPrecondition(f"{path} is not a credentials file; remove it") from None
    missing = [r for r in ROLES if not stored.get(r)]
    for role in missing:
        stored[role] = secrets.token_urlsafe(32)
    if missing:
        data_dir.mkdir(parents=True, exist_ok=True)
        _write_private(path, json.dumps({"passwords": stored}, indent=2) + "\n")
    return {role: Credential(role, stored[role]) for role in ROLES}


def _quote(value: str) -> str:
    return json.dumps(value)


def _list(values: list[str]) -> str:
    return "[" + ", ".join(_quote(v) for v in values) + "]"


def authorization_block(creds: Mapping[str, Credential], *, events_stream: str = "EVENTS") -> str:
    """The server config's ``authorization`` block: every user with its
    bcrypt hash and permissions; no anonymous user."""
    lines = ["authorization {", "  users = ["]
    for role, cred in creds.items():
        hashed = bcrypt.hashpw(cred.password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
        perms = permissions(role, events_stream=events_stream)
        pub = perms["publish"]
        sub = perms["subscribe"]
        assert isinstance(pub, dict) and isinstance(sub, dict)
        lines += [
            "    {",
            f"      user: {_quote(cred.user)}",
            f"      password: {_quote(hashed)}",
            "      permissions: {",
            f"        publish: {{allow: {_list(pub['allow'])}, deny: {_list(pub['deny'])}}}",
            f"        subscribe: {{allow: {_list(sub['allow'])}}}",
            "        allow_responses: true",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def service_env(creds: Mapping[str, Credential], service: str) -> dict[str, str]:
    """The ``PACH_NATS_*`` variables of one service's process."""
    own = creds[service]
    env = {"PACH_NATS_USER": own.user, "PACH_NATS_PASSWORD": own.password}
    if service == "pps":
        worker = creds[WORKER]
        env["PACH_NATS_WORKER_USER"] = worker.user
        env["PACH_NATS_WORKER_PASSWORD"] = worker.password
    return env


def kubernetes_secrets(creds: Mapping[str, Credential], *, events_stream: str = "EVENTS") -> str:
    """The two Secrets deploy/kubernetes expects: ``pachyderm-nats`` (each
    service's password, key = user) and ``pachyderm-nats-server`` (the
    server's ``auth.conf``: hashes only)."""

    def secret(name: str, data: Mapping[str, str]) -> str:
        lines = ["apiVersion: v1", "kind: Secret", "metadata:", f"  name: {name}"]
        lines += ["type: Opaque", "stringData:"]
        for key, value in data.items():
            body = "\n".join("    " + ln for ln in value.splitlines())
            lines.append(f"  {key}: |-\n{body}" if "\n" in value else f"  {key}: {_quote(value)}")
        return "\n".join(lines) + "\n"

    passwords = {role: c.password for role, c in creds.items() if role != OPERATOR}
    auth = authorization_block(
        {r: c for r, c in creds.items() if r != OPERATOR}, events_stream=events_stream
    )
    return (
        secret("pachyderm-nats", passwords)
        + "---\n"
        + secret("pachyderm-nats-server", {"auth.conf": auth})
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m programs.cluster.credentials --kubernetes``: new
    credentials as the two Secrets of deploy/kubernetes, on stdout (for
    ``kubectl apply -f -``; nothing is written to disk)."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--kubernetes"]:
        print("usage: python -m programs.cluster.credentials --kubernetes", file=sys.stderr)
        return 2
    fresh = {role: Credential(role, secrets.token_urlsafe(32)) for role in ROLES}
    sys.stdout.write(kubernetes_secrets(fresh))
    return 0


if __name__ == "__main__":
    sys.exit(main())
