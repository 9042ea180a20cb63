"""``pachctl port-forward``'s tunnel (programs/pachctl/commands/deploy_forward.py)
against a peer speaking the API server's pod port-forward WebSocket protocol
(``v4.channel.k8s.io``): bytes go both ways on channel 0, the port header of
each channel is stripped, the kube config's bearer token and the port are
sent, and an error on channel 1 ends the connection."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from kubernetes_asyncio import client as k8s

from libs.deploy import kube
from programs.pachctl.commands.deploy_forward import PROTOCOL, listen
from tests.support.kube_emulator import kubeconfig


async def peer(seen: dict[str, Any], fail: bool = False) -> tuple[web.AppRunner, int]:
    async def portforward(request: web.Request) -> web.WebSocketResponse:
        seen.update(
            path=request.path,
            ports=request.query.get("ports"),
            auth=request.headers.get("authorization"),
        )
        ws = web.WebSocketResponse(protocols=(PROTOCOL,))
        await ws.prepare(request)
        port = struct.pack("<H", int(request.query["ports"]))
        await ws.send_bytes(b"\x00" + port)  # data channel's header
        await ws.send_bytes(b"\x01" + port)  # error channel's header
        if fail:
            await ws.send_bytes(b"\x01" + b"connection refused")
        async for msg in ws:
            if msg.type == WSMsgType.BINARY and msg.data[:1] == b"\x00":
                await ws.send_bytes(b"\x00" + msg.data[1:].upper())
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/portforward", portforward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def api_for(port: int, tmp: Path) -> k8s.ApiClient:
    """A client from a kube config naming the peer and a bearer token."""
    return await kube.connect(str(kubeconfig(port, tmp / "kubeconfig")))


async def test_bytes_cross_the_tunnel_both_ways(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    runner, port = await peer(seen)
    api = await api_for(port, tmp_path)
    server = await listen(api, "pach", "gateway-abc", 0, 30650)
    local = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"hello")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"HELLO"
        writer.write(b"again")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(5), 10) == b"AGAIN"
        writer.close()
        assert seen == {
            "path": "/api/v1/namespaces/pach/pods/gateway-abc/portforward",
            "ports": "30650",
            "auth": "Bearer emulator",
        }
    finally:
        server.close()
        await api.close()
        await runner.cleanup()


async def test_an_error_from_the_pod_closes_the_connection(tmp_path: Path) -> None:
    runner, port = await peer({}, fail=True)
    api = await api_for(port, tmp_path)
    server = await listen(api, "pach", "gateway-abc", 0, 30650)
    local = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing sent
        writer.close()
    finally:
        server.close()
        await api.close()
        await runner.cleanup()
