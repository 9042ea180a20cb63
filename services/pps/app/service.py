"""Service pipelines (1.7's ``service: {internal_port, external_port}``):
the user code runs for as long as its job is the pipeline's newest, over
the job's one datum laid out under ``/pfs`` as for any datum.

``ServiceHost`` runs one service per pipeline, in pps (the pipeline
master's replica), in the same sandbox as a worker's datums (bubblewrap,
the data dir hidden). The sandbox shares the host's network, so the code
binds ``internal_port`` on this machine; when ``external_port`` differs,
the host listens on ``127.0.0.1:<external_port>`` and forwards each
connection to ``127.0.0.1:<internal_port>``. A process that exits is
started again (after a pause) while its job is current; ``replace``
stops the old process before the new job's starts (1.7 did the same)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from libs.api.internal import pps_work_pb2 as work
from libs.api.pps import pps_pb2 as pps
from libs.errors import FailedPrecondition
from libs.objects import ObjectStore
from services.pps.adapters.secrets import SecretStore
from services.pps.domain.resources import limits_of
from services.pps.runners.base import Runner
from services.pps.worker.datum import datum_env, stdin_bytes, transform_secrets
from services.pps.worker.layout import lay_out

_log = structlog.get_logger("pps.service")

RESTART_PAUSE_S = 1.0
_PIPE = 64 << 10


class _LogSink(Protocol):
    async def append(self, msg: pps.LogMessage) -> None: ...


@dataclass
class _Running:
    job: str
    scratch: Path
    task: asyncio.Task[None]
    proxy: asyncio.Server | None = None


@dataclass
class ServiceHost:
    store: ObjectStore
    make_runner: Callable[[], Runner]  # called when the first service starts
    scratch_root: Path
    logs: _LogSink
    secrets: SecretStore | None = None
    running: dict[str, _Running] = field(default_factory=dict)
    _runner: Runner | None = None

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = self.make_runner()
        return self._runner

    def current(self, pipeline: str) -> str:
        """The job whose service runs for ``pipeline`` ("" for none)."""
        run = self.running.get(pipeline)
        return run.job if run is not None and not run.task.done() else ""

    async def replace(
        self,
        pipeline: str,
        job: str,
        output_commit: str,
        spec: pps.CreatePipelineRequest,
        task: work.DatumTask,
    ) -> None:
        """Stop ``pipeline``'s service, then run ``job``'s."""
        await self.stop(pipeline)
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"svc-{pipeline}-", dir=self.scratch_root))
        scratch.chmod(0o755)  # noqa: ASYNC240 - the sandbox uid walks through it to /pfs
        try:
            runner = self.runner
            layout = await lay_out(task, self.store, scratch / "pfs")
            env, binds = await asyncio.to_thread(transform_secrets, self.secrets, spec)
            env = {**datum_env(task, job, output_commit, spec), **env}
            service = spec.service
            proxy = None
            if service.external_port and service.external_port != service.internal_port:
                proxy = await _forward(service.external_port, service.internal_port)
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
            raise

        async def on_line(line: str) -> None:
            ts = Timestamp()
            ts.GetCurrentTime()
            msg = pps.LogMessage(pipeline_name=pipeline, job_id=job, user=True, message=line, ts=ts)
            with contextlib.suppress(Exception):
                await self.logs.append(msg)

        async def serve() -> None:
            while True:
                result = await runner.run(
                    list(spec.transform.cmd),
                    pfs_dir=layout.pfs_dir,
                    stdin=stdin_bytes(spec),
                    env=env,
                    working_dir=spec.transform.working_dir,
                    timeout=None,
                    on_line=on_line,
                    extra_ro_binds=binds,
                    user=spec.transform.user,
                    limits=limits_of(spec),
                )
                _log.warning(
                    "service exited; starting it again",
                    pipeline=pipeline,
                    job=job,
                    code=result.returncode,
                )
                await asyncio.sleep(RESTART_PAUSE_S)

        run_task = asyncio.create_task(serve(), name=f"pps service {pipeline}")
        self.running[pipeline] = _Running(job, scratch, run_task, proxy)
        _log.info("service started", pipeline=pipeline, job=job)

    async def stop(self, pipeline: str) -> None:
        run = self.running.pop(pipeline, None)
        if run is None:
            return
        if run.proxy is not None:
            run.proxy.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run.proxy.wait_closed(), 2.0)
        run.task.cancel()
        await asyncio.gather(run.task, return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, run.scratch, True)
        _log.info("service stopped", pipeline=pipeline, job=run.job)

    async def stop_all(self) -> None:
        for name in list(self.running):
            await self.stop(name)


async def _forward(external: int, internal: int) -> asyncio.Server:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(_PIPE):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", internal)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    try:
        return await asyncio.start_server(handle, "127.0.0.1", external)
    except OSError as exc:
        raise FailedPrecondition(
            f"service.external_port {external}: cannot listen on 127.0.0.1:{external}: "
            f"{exc.strerror or exc}",
            port=external,
        ) from None
