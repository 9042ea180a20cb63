"""A real S3 server for tests and benchmarks: Ceph radosgw on a one-node cluster.

``start_s3_server(work_dir)`` brings up, all under ``work_dir``:

* one monitor (``ceph-mon``, auth none, messenger v2 in crc mode),
* one OSD with the in-memory ``memstore`` backend (nothing touches the disk),
* ``radosgw`` (beast frontend) on a free loopback port,

then creates an S3 user with ``radosgw-admin`` and returns an ``S3Server``
with the endpoint and credentials. No manager daemon is needed. Every daemon
is started with a parent-death signal, so a crashed test run leaves nothing
behind. Install the packages first with ``tests/servers/install-s3.sh``.

Run ``python -m tests.servers.s3server [work_dir]`` to keep one in the
foreground; it prints the endpoint and credentials as shell exports.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool")
INSTALL_HINT = (
    "install them with tests/servers/install-s3.sh "
    "(Debian packages radosgw ceph-mon ceph-osd ceph-common)"
)


class S3ServerError(RuntimeError):
    """The S3 test server could not be started; the message says why."""


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    work_dir: Path
    region: str = "us-east-1"
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        """The variables ``libs.config`` and the benchmarks read."""
        return {
            "PACH_S3_ENDPOINT": self.endpoint,
            "PACH_S3_ACCESS_KEY": self.access_key,
            "PACH_S3_SECRET_KEY": self.secret_key,
            "PACH_S3_REGION": self.region,
        }

    def alive(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def stop(self) -> None:
        """Stop every daemon (radosgw first), killing any that lingers."""
        procs, self._procs = list(reversed(self._procs)), []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 1.0  # state is in memory: nothing to flush
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: the daemon gets SIGKILL when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _conf(work: Path, fsid: str, mon_port: int, rgw_port: int, memstore_bytes: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
mon warn on insecure global id reclaim allowed = false
ms mon client mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
ms client mode = crc
ms service mode = crc
ms cluster mode = crc
ms bind msgr1 = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 1
osd pool default pgp num = 1
paxos propose interval = 0.01
paxos min wait = 0.001
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
run dir = {work}/run
admin socket = {work}/run/$name.asok
pid file = {work}/run/$name.pid
log file = {work}/log/$name.log
mon data = {work}/mon/$cluster-$id
osd data = {work}/osd/$cluster-$id
keyring = {work}/keyring
debug ms = 0/0
debug rgw = 0/0
debug osd = 0/0
debug mon = 0/0
debug monc = 0/0

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {work}/rgw
rgw enable usage log = false
rgw enable ops log = false
rgw dns name = 127.0.0.1
"""


def _run(args: list[str], work: Path, what: str, timeout: float = 60.0) -> str:
    try:
        done = subprocess.run(
            args, cwd=work, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise S3ServerError(f"{what} timed out after {timeout:.0f}s: {' '.join(args)}") from exc
    if done.returncode != 0:
        raise S3ServerError(
            f"{what} failed (exit {done.returncode}): {' '.join(args)}\n{done.stderr[-2000:]}"
        )
    return done.stdout


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_s3_server(
    work_dir: Path | str,
    *,
    timeout: float = 90.0,
    memstore_bytes: int = 8 << 30,
) -> S3Server:
    """Start radosgw + mon + memstore OSD under ``work_dir``; wait until S3 answers."""
    missing = missing_binaries()
    if missing:
        raise S3ServerError(
            f"S3 test server binaries missing: {', '.join(missing)}; {INSTALL_HINT}"
        )
    work = Path(work_dir).absolute()
    for sub in ("run", "log", "mon", "osd/ceph-0", "rgw"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    conf = work / "ceph.conf"
    fsid = str(uuid.uuid4())
    mon_port, rgw_port = _free_port(), _free_port()
    conf.write_text(_conf(work, fsid, mon_port, rgw_port, memstore_bytes))
    c = ["-c", str(conf)]
    server = S3Server(
        endpoint=f"http://127.0.0.1:{rgw_port}",
        access_key=secrets.token_hex(10).upper(),
        secret_key=secrets.token_hex(20),
        work_dir=work,
    )
    deadline = time.monotonic() + timeout

    def spawn(name: str, args: list[str]) -> None:
        log = (work / "log" / f"{name}.out").open("ab")
        try:
            proc = subprocess.Popen(
                args,
                cwd=work,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        server._procs.append(proc)

    try:
        (work / "keyring").write_text("")
        _run(["monmaptool", "--create", "--add", "a", f"v2:127.0.0.1:{mon_port}", "--fsid", fsid,
              str(work / "monmap")], work, "monmaptool")  # fmt: skip
        _run(["ceph-mon", *c, "--mkfs", "-i", "a", "--monmap", str(work / "monmap")], work,
             "ceph-mon --mkfs")  # fmt: skip
        spawn("mon", ["ceph-mon", *c, "-i", "a", "-f"])
        osd_uuid = str(uuid.uuid4())
        osd_id = _run(["ceph", *c, "--connect-timeout", "30", "osd", "new", osd_uuid], work,
                      "ceph osd new").strip()  # fmt: skip
        _run(["ceph-osd", *c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid], work,
             "ceph-osd --mkfs")  # fmt: skip
        spawn("osd", ["ceph-osd", *c, "-i", osd_id, "-f"])
        spawn("rgw", ["radosgw", *c, "-n", "client.rgw", "-f"])
        _wait_http(server, deadline)
        _run(["radosgw-admin", *c, "user", "create", "--uid", "pach", "--display-name", "pach",
              "--access-key", server.access_key, "--secret-key", server.secret_key], work,
             "radosgw-admin user create")  # fmt: skip
    except BaseException:
        server.stop()
        raise
    (work / "credentials.json").write_text(json.dumps(server.env(), indent=2))
    return server


def _wait_http(server: S3Server, deadline: float) -> None:
    while True:
        for proc, name in zip(server._procs, ("mon", "osd", "rgw"), strict=False):
            if proc.poll() is not None:
                log = server.work_dir / "log" / f"{name}.out"
                raise S3ServerError(
                    f"ceph {name} exited with {proc.returncode} during startup:\n{_tail(log)}"
                )
        try:
            with urllib.request.urlopen(server.endpoint + "/", timeout=1.0):
                return
        except urllib.error.HTTPError:
            return  # it answered: S3 is up
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            log = server.work_dir / "log" / "client.rgw.log"
            raise S3ServerError(f"radosgw did not answer on {server.endpoint}:\n{_tail(log)}")
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    work = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="pach-s3-"))
    started = time.monotonic()
    server = start_s3_server(work)
    print(f"# radosgw up in {time.monotonic() - started:.1f}s, state in {work}", flush=True)
    for name, value in server.env().items():
        print(f"export {name}={value}", flush=True)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop and server.alive():
            time.sleep(0.2)
    finally:
        server.stop()
    return 0 if stop else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
