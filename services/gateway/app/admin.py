"""The gateway's side of extract, restore and inspect-cluster: it asks the
admin service over the bus and moves bytes between its client and the
object store (docs/decisions/0012-admin-service.md). It holds no admin
engine: with admin down, these calls fail with Unavailable.

- ``extract_bytes``: an extract session's parts, streamed and deleted one
  by one, each consumption reported so admin writes further ahead;
- ``restore_bytes``: the client's bytes cut into parts, each handed to the
  restore session as soon as it is stored;
- with a URL, admin reads or writes it itself, and these only wait.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs.api.admin import admin_pb2 as admin
from libs.api.internal import admin_service_pb2 as msg
from libs.bus import Bus
from libs.objects.base import ObjectStore
from libs.transfer import delete_parts, read_part, write_parts

ADMIN = "admin"
LONG_TIMEOUT_S = 3600.0
POLL_TIMEOUT_S = 30.0  # admin answers a parts request within ~5 s

R = TypeVar("R", bound=Message)


@dataclass(frozen=True)
class AdminClient:
    """Admin calls on behalf of one caller (its principal and deadline)."""

    bus: Bus
    transfers: ObjectStore
    principal: str = ""
    timeout: float = LONG_TIMEOUT_S  # the caller's deadline, for the long calls

    async def cluster_id(self) -> str:
        info = await self.bus.request(
            ADMIN,
            "InspectCluster",
            Empty(),
            admin.ClusterInfo,
            kind="qry",
            principal=self.principal,
            timeout=min(self.bus.timeout, self.timeout),
        )
        return info.id

    async def extract_to_url(self, url: str, *, objects: bool) -> int:
        done = await self._cmd(
            "Extract", msg.ExtractStart(objects=objects, url=url), msg.ExtractStarted
        )
        return done.bytes

    async def restore_from_url(self, url: str) -> msg.RestoreDone:
        start = msg.RestoreStart(url=url, timeout_s=self.timeout)
        return (await self._cmd("Restore", start, msg.RestoreStarted)).done

    async def extract_bytes(self, *, objects: bool) -> AsyncGenerator[bytes, None]:
        """The framed extract, part by part (each deleted once streamed)."""
        started = await self._cmd(
            "Extract", msg.ExtractStart(objects=objects), msg.ExtractStarted, short=True
        )
        keys: deque[str] = deque()
        consumed = have = 0
        done = False
        try:
            while True:
                if not done:
                    reply = await self._cmd(
                        started.parts,
                        msg.ExtractPartsRequest(consumed=consumed, have=have),
                        msg.ExtractParts,
                        poll=True,
                    )
                    keys.extend(reply.keys)
                    have += len(reply.keys)
                    done = reply.done
                if not keys:
                    if done:
                        return
                    continue
                key = keys[0]
                async for block in read_part(self.transfers, key):
                    yield block
                keys.popleft()
                consumed += 1
        finally:
            if not done:
                with contextlib.suppress(Exception):
                    await self._cmd(
                        started.parts,
                        msg.ExtractPartsRequest(cancel=True),
                        msg.ExtractParts,
                        short=True,
                    )
            await delete_parts(self.transfers, list(keys))

    async def restore_bytes(self, data: AsyncIterable[bytes]) -> msg.RestoreDone:
        """Restore the framed extract ``data``; returns once pfs and pps
        applied the restored log."""
        start = msg.RestoreStart(timeout_s=self.timeout)
        started = await self._cmd("Restore", start, msg.RestoreStarted, short=True)
        finished = False

        async def hand_over(key: str) -> None:
            try:
                await self._cmd(started.parts, msg.RestoreParts(keys=[key]), msg.RestoreDone)
            except BaseException:
                await delete_parts(self.transfers, [key])  # admin may not have taken it
                raise

        try:
            await write_parts(self.transfers, "restore", started.id, data, hand_over)
            done = await self._cmd(started.parts, msg.RestoreParts(last=True), msg.RestoreDone)
            finished = True
            return done
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    await self._cmd(
                        started.parts, msg.RestoreParts(cancel=True), msg.RestoreDone, short=True
                    )

    async def _cmd(
        self,
        name: str,
        request: Message,
        response_type: type[R],
        *,
        short: bool = False,
        poll: bool = False,
    ) -> R:
        """``cmd.admin.<name>``: a short call within the bus's default, a
        parts poll within ``POLL_TIMEOUT_S``, others until the caller's
        deadline."""
        if short:
            timeout = min(self.bus.timeout, self.timeout)
        elif poll:
            timeout = min(POLL_TIMEOUT_S, self.timeout)
        else:
            timeout = self.timeout
        return await self.bus.request(
            ADMIN, name, request, response_type, principal=self.principal, timeout=timeout
        )
