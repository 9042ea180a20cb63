"""``pachctl port-forward``'s tunnel: each local TCP connection becomes a
WebSocket to the API server's pod ``portforward`` subresource
(``v4.channel.k8s.io``: every frame starts with its channel byte; channel 0
carries data, channel 1 errors; each channel's first frame is the port
number, two bytes little-endian), with the kube config's credentials."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import aiohttp
from kubernetes_asyncio import client as k8s

PROTOCOL = "v4.channel.k8s.io"
CHUNK = 64 * 1024


def _ssl(cfg: k8s.Configuration) -> ssl.SSLContext | bool:
    if not (cfg.host or "").startswith("https"):
        return False
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _headers(cfg: k8s.Configuration) -> dict[str, str]:
    out: dict[str, str] = {}
    for setting in (await cfg.auth_settings()).values():
        if setting.get("in") == "header" and setting.get("value"):
            out[str(setting["key"])] = str(setting["value"])
    return out


async def tunnel(
    api: k8s.ApiClient,
    namespace: str,
    pod: str,
    port: int,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    cfg = api.configuration
    url = f"{(cfg.host or '').rstrip('/')}/api/v1/namespaces/{namespace}/pods/{pod}/portforward"
    url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            url,
            params={"ports": str(port)},
            headers=await _headers(cfg),
            protocols=(PROTOCOL,),
            ssl=_ssl(cfg),
        ) as ws,
    ):
        seen: set[int] = set()

        async def down() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                if channel not in seen:  # the port number comes first
                    seen.add(channel)
                    data = data[2:]
                if channel == 0 and data:
                    writer.write(data)
                    await writer.drain()
                elif channel == 1 and data:
                    raise ConnectionError(data.decode(errors="replace"))

        async def up() -> None:
            while chunk := await reader.read(CHUNK):
                await ws.send_bytes(b"\x00" + chunk)

        tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def listen(
    api: k8s.ApiClient, namespace: str, pod: str, local: int, remote: int
) -> asyncio.Server:
    """Listen on 127.0.0.1:``local``; tunnel each connection to ``pod``:``remote``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await tunnel(api, namespace, pod, remote, reader, writer)

    return await asyncio.start_server(handle, "127.0.0.1", local)
