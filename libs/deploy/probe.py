"""``python -m libs.deploy.probe <service> [--live]``: the readiness and
liveness probe of a backend's pod. It asks the service's ``Health`` query
over NATS with the pod's own credential (``PACH_NATS_USER`` /
``PACH_NATS_PASSWORD``). Ready: a replica answered ready. Live (``--live``):
NATS took the connection and a replica answered at all. Exit 0 or 1."""

from __future__ import annotations

import asyncio
import os
import sys

import nats

from libs.api.internal.service_pb2 import HealthRequest, HealthResponse
from libs.bus import Bus

TIMEOUT_S = 3.0


async def check(service: str, *, live: bool, env: dict[str, str]) -> bool:
    user = env.get("PACH_NATS_USER", "")
    options: dict[str, object] = {
        "servers": [env.get("PACH_NATS_URL", "nats://127.0.0.1:4222")],
        "connect_timeout": TIMEOUT_S,
        "max_reconnect_attempts": 0,
        "allow_reconnect": False,
    }
    if user:
        options.update(
            user=user, password=env.get("PACH_NATS_PASSWORD", ""), inbox_prefix=f"_INBOX.{user}"
        )
    try:
        nc = await nats.connect(**options)  # type: ignore[arg-type]
    except Exception:
        return False
    try:
        bus = Bus(nc, service=f"{service}-probe", timeout=TIMEOUT_S)
        reply = await bus.request(service, "Health", HealthRequest(), HealthResponse, kind="qry")
        return live or reply.ready
    except Exception:
        return False
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-") or set(args[1:]) - {"--live"}:
        print("usage: python -m libs.deploy.probe <service> [--live]", file=sys.stderr)
        return 2
    ok = asyncio.run(check(args[0], live="--live" in args[1:], env=dict(os.environ)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
