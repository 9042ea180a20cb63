"""``pfs.API``: each RPC is forwarded to the pfs service over the bus with
the caller's principal. RPCs not listed here answer UNIMPLEMENTED (the
generated base class) until pfs serves them.

The RPCs that wait or stream come from ``services.gateway.app``: put-file,
get-file and copy-file from ``app.ingest``; ListFile, GlobFile and DiffFile
from pfs's pages (``app.file_pages``); ``InspectCommit`` with a
``block_state``, ``FlushCommit``, ``SubscribeCommit`` and
``ListCommitStream`` from ``app.commits``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message

from libs import bytes_value
from libs.api.pfs import pfs_pb2 as pfs
from libs.api.pfs import pfs_pb2_grpc
from libs.bus import Bus
from libs.objects import LocalObjectStore, ObjectStore
from services.gateway.app import commits, file_pages
from services.gateway.app import ingest as files
from services.gateway.app.identity import LocalAdvert
from services.gateway.app.packs import PackGroups
from services.gateway.app.replies import MAX_REPLY
from services.gateway.grpc.streams import closed_by_client
from services.gateway.principal import Ask, ask, grpc_token

Ctx = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R", bound=Message)


# InspectFile's trailing metadata: the port of the gateway's HTTP download,
# sent when it serves files with sendfile (the local store): pachctl
# get-file fetches the bytes there (docs/decisions/0036-get-file-fast-path.md).
HTTP_PORT_KEY = "pach-http-port"


class PfsServicer(pfs_pb2_grpc.APIServicer):
    def __init__(
        self,
        bus: Bus,
        store: ObjectStore,
        max_reply: int = MAX_REPLY,
        http_port: int = 0,
        local: LocalAdvert | None = None,
    ) -> None:
        self.bus = bus
        self._local = local
        self.store = store
        self.max_reply = max_reply
        fast = http_port and isinstance(store, LocalObjectStore)
        self._advertised: tuple[tuple[str, str], ...] = (
            ((HTTP_PORT_KEY, str(http_port)),) if fast else ()
        )
        # one-small-file put-files share pack writes, per caller's token
        self._packs = PackGroups(store)

    def _ask(self, context: Ctx) -> Ask:
        async def call(name: str, request: Message, response_type: type[R], kind: str) -> R:
            return await ask(self.bus, context, "pfs", name, request, response_type, kind=kind)

        return call

    async def PutFile(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pfs.PutFileRequest], context: Ctx
    ) -> Empty:
        requests = closed_by_client(request_iterator, context)
        owner = grpc_token(context)
        return await files.put_files(self.store, self._ask(context), requests, self._packs, owner)

    async def GetFile(  # type: ignore[override]
        self, request: pfs.GetFileRequest, context: Ctx
    ) -> AsyncIterator[bytes | memoryview]:
        """Each reply is a ``BytesValue``, framed by ``register``'s
        serializer straight from the bytes read (no message built)."""
        async for block in file_pages.read_file(self.store, self._ask(context), request):
            yield block

    async def InspectFile(  # type: ignore[override]
        self, request: pfs.InspectFileRequest, context: Ctx
    ) -> pfs.FileInfo:
        info = await ask(self.bus, context, "pfs", "InspectFile", request, pfs.FileInfo, kind="qry")
        advertised = self._advertised
        if self._local is not None:  # the same-host read socket (0039)
            advertised += await self._local.metadata()
        if advertised:
            context.set_trailing_metadata(advertised)
        return info

    async def ListFile(  # type: ignore[override]
        self, request: pfs.ListFileRequest, context: Ctx
    ) -> pfs.FileInfos:
        infos = file_pages.list_file(self._ask(context), request)
        return await file_pages.gather(infos, "ListFile", self.max_reply)

    async def ListFileStream(  # type: ignore[override]
        self, request: pfs.ListFileRequest, context: Ctx
    ) -> AsyncIterator[pfs.FileInfo]:
        async for info in file_pages.list_file(self._ask(context), request):
            yield info

    async def GlobFile(  # type: ignore[override]
        self, request: pfs.GlobFileRequest, context: Ctx
    ) -> pfs.FileInfos:
        infos = file_pages.glob_file(self._ask(context), request)
        return await file_pages.gather(infos, "GlobFile", self.max_reply)

    async def GlobFileStream(  # type: ignore[override]
        self, request: pfs.GlobFileRequest, context: Ctx
    ) -> AsyncIterator[pfs.FileInfo]:
        async for info in file_pages.glob_file(self._ask(context), request):
            yield info

    async def DiffFile(  # type: ignore[override]
        self, request: pfs.DiffFileRequest, context: Ctx
    ) -> pfs.DiffFileResponse:
        return await file_pages.diff_file(self._ask(context), request, self.max_reply)

    async def CopyFile(  # type: ignore[override]
        self, request: pfs.CopyFileRequest, context: Ctx
    ) -> Empty:
        return await files.copy_file(self.store, self._ask(context), request)

    async def DeleteAll(self, request: Empty, context: Ctx) -> Empty:  # type: ignore[override]
        return await ask(self.bus, context, "pfs", "DeleteAll", request, Empty)

    async def BuildCommit(  # type: ignore[override]
        self, request: pfs.BuildCommitRequest, context: Ctx
    ) -> pfs.Commit:
        return await ask(self.bus, context, "pfs", "BuildCommit", request, pfs.Commit)

    async def DeleteFile(  # type: ignore[override]
        self, request: pfs.DeleteFileRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "DeleteFile", request, Empty)

    async def CreateRepo(self, request: pfs.CreateRepoRequest, context: Ctx) -> Empty:  # type: ignore[override]
        return await ask(self.bus, context, "pfs", "CreateRepo", request, Empty)

    async def InspectRepo(self, request: pfs.InspectRepoRequest, context: Ctx) -> pfs.RepoInfo:  # type: ignore[override]
        return await ask(self.bus, context, "pfs", "InspectRepo", request, pfs.RepoInfo, kind="qry")

    async def ListRepo(  # type: ignore[override]
        self, request: pfs.ListRepoRequest, context: Ctx
    ) -> pfs.ListRepoResponse:
        return await ask(
            self.bus, context, "pfs", "ListRepo", request, pfs.ListRepoResponse, kind="qry"
        )

    async def DeleteRepo(self, request: pfs.DeleteRepoRequest, context: Ctx) -> Empty:  # type: ignore[override]
        return await ask(self.bus, context, "pfs", "DeleteRepo", request, Empty)

    async def StartCommit(  # type: ignore[override]
        self, request: pfs.StartCommitRequest, context: Ctx
    ) -> pfs.Commit:
        return await ask(self.bus, context, "pfs", "StartCommit", request, pfs.Commit)

    async def FinishCommit(  # type: ignore[override]
        self, request: pfs.FinishCommitRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "FinishCommit", request, Empty)

    async def InspectCommit(  # type: ignore[override]
        self, request: pfs.InspectCommitRequest, context: Ctx
    ) -> pfs.CommitInfo:
        return await commits.wait_for_commit(self._ask(context), request)

    async def FlushCommit(  # type: ignore[override]
        self, request: pfs.FlushCommitRequest, context: Ctx
    ) -> AsyncIterator[pfs.CommitInfo]:
        async for info in commits.flush_commits(self._ask(context), request):
            yield info

    async def SubscribeCommit(  # type: ignore[override]
        self, request: pfs.SubscribeCommitRequest, context: Ctx
    ) -> AsyncIterator[pfs.CommitInfo]:
        async for info in commits.subscribe_commits(self._ask(context), request):
            yield info

    async def ListCommitStream(  # type: ignore[override]
        self, request: pfs.ListCommitRequest, context: Ctx
    ) -> AsyncIterator[pfs.CommitInfo]:
        async for info in commits.list_commits(self._ask(context), request):
            yield info

    async def ListCommit(  # type: ignore[override]
        self, request: pfs.ListCommitRequest, context: Ctx
    ) -> pfs.CommitInfos:
        return await ask(
            self.bus, context, "pfs", "ListCommit", request, pfs.CommitInfos, kind="qry"
        )

    async def DeleteCommit(  # type: ignore[override]
        self, request: pfs.DeleteCommitRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "DeleteCommit", request, Empty)

    async def CreateBranch(  # type: ignore[override]
        self, request: pfs.CreateBranchRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "CreateBranch", request, Empty)

    async def InspectBranch(  # type: ignore[override]
        self, request: pfs.InspectBranchRequest, context: Ctx
    ) -> pfs.BranchInfo:
        return await ask(
            self.bus, context, "pfs", "InspectBranch", request, pfs.BranchInfo, kind="qry"
        )

    async def ListBranch(  # type: ignore[override]
        self, request: pfs.ListBranchRequest, context: Ctx
    ) -> pfs.BranchInfos:
        return await ask(
            self.bus, context, "pfs", "ListBranch", request, pfs.BranchInfos, kind="qry"
        )

    async def DeleteBranch(  # type: ignore[override]
        self, request: pfs.DeleteBranchRequest, context: Ctx
    ) -> Empty:
        return await ask(self.bus, context, "pfs", "DeleteBranch", request, Empty)


def register(
    server: grpc.aio.Server,
    bus: Bus,
    store: ObjectStore,
    max_reply: int = MAX_REPLY,
    http_port: int = 0,
    local: LocalAdvert | None = None,
) -> None:
    """``http_port``: where the gateway's HTTP download listens (0: none);
    ``local``: the same-host read socket InspectFile advertises."""
    # The RPCs PfsServicer does not define yet keep the generated base's
    # UNIMPLEMENTED answer; the typed stubs declare them abstract.
    servicer = PfsServicer(bus, store, max_reply, http_port, local)  # type: ignore[abstract]
    capture = _Handlers()
    pfs_pb2_grpc.add_APIServicer_to_server(servicer, capture)  # type: ignore[arg-type]
    handlers = capture.handlers
    # GetFile's replies are BytesValue frames written from the bytes read.
    handlers["GetFile"] = grpc.unary_stream_rpc_method_handler(
        servicer.GetFile,
        request_deserializer=pfs.GetFileRequest.FromString,
        response_serializer=bytes_value.frame,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    server.add_registered_method_handlers(_SERVICE, handlers)


_SERVICE = "pfs.API"


class _Handlers:
    """Stands in for the server to take the generated method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, _: object) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        assert service == _SERVICE, service
        self.handlers = dict(handlers)
