"""A Kubernetes API emulator as its own process, for the tests of pps's
Kubernetes runner and ``pachctl deploy``: kmock's ``KubernetesEmulator`` (an
aiohttp server keeping objects in memory: create, get, list, merge-patch,
delete, watch) on a loopback port. ``python -m tests.support.kube_emulator``
prints ``PORT <n>`` once it listens and serves until killed.

``start(tmp)`` runs it and writes a kube config pointing at it; the code
under test reaches it through the real kubernetes-asyncio client over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

_NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?/?$")


async def _serve() -> None:
    import attrs
    import kmock
    from aiohttp import web

    @attrs.define(kw_only=True)
    class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
        """kmock 0.8 cannot parse the Namespace paths themselves
        (``/api/v1/namespaces[/<name>]``): those are kept here."""

        namespaces: dict[str, Any] = attrs.field(factory=dict)

        async def __call__(self, raw: web.BaseRequest) -> web.StreamResponse:
            match = _NAMESPACES.match(raw.path)
            if match is None:
                return await super().__call__(raw)
            name = match.group(1)
            if raw.method == "POST" and name is None:
                obj = await raw.json()
                name = obj["metadata"]["name"]
                if name in self.namespaces:
                    return web.json_response({"kind": "Status", "code": 409}, status=409)
                self.namespaces[name] = obj
                return web.json_response(obj, status=201)
            if name is None:
                return web.json_response({"items": list(self.namespaces.values())})
            if name not in self.namespaces:
                return web.json_response({"kind": "Status", "code": 404}, status=404)
            if raw.method == "DELETE":
                return web.json_response(self.namespaces.pop(name))
            if raw.method == "PATCH":
                self.namespaces[name].update(await raw.json())
            return web.json_response(self.namespaces[name])

    async with Emulator() as emulator, kmock.Server(emulator) as server:
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()


def kubeconfig(port: int, path: Path) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emu", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "emu", "user": {"token": "emulator"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}],
        "current-context": "emu",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.contextmanager
def start(tmp: Path) -> Iterator[tuple[int, Path]]:
    """The emulator's port and a kube config for it; stopped on exit."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.kube_emulator"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the Kubernetes emulator did not start: {line!r}")
        port = int(line.split()[1])
        yield port, kubeconfig(port, tmp / "kubeconfig.yaml")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve())
