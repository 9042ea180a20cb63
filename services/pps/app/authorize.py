"""Who may call what on pps while auth is active (the bus guard's rules,
``libs.authz.guard``). A pipeline's output repo is named after it:
creating or updating one needs READER on every input and WRITER on the
output repo when it exists (the creator of a new one becomes its OWNER);
deleting it needs OWNER; starting and stopping it WRITER. Job and datum
requests name a job id only, so the changes (stop, delete, restart) are
admin-only until pps checks the job's pipeline itself; reads are open to
anyone logged in. Cluster-wide operations are admin-only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from libs.authz.state import ANYONE, OWNER, READER, WRITER, Need, admin, on_repos
from libs.pps.spec import atom_inputs


def _create_pipeline(r: Any) -> Need:
    inputs = on_repos(READER, *(a.repo for a in atom_inputs(r.input)))
    return Need(repos=inputs.repos, writer_if_exists=(r.pipeline.name,))


def _delete_pipeline(r: Any) -> Need:
    return admin("delete-pipeline --all") if r.all else on_repos(OWNER, r.pipeline.name)


RULES: dict[str, Callable[[Any], Need]] = {
    "CreatePipeline": _create_pipeline,
    "InspectPipeline": lambda r: on_repos(READER, r.pipeline.name),
    "ListPipeline": lambda _: ANYONE,
    "GetPipelineSpec": lambda r: on_repos(READER, r.pipeline.name),
    "DeletePipeline": _delete_pipeline,
    "StartPipeline": lambda r: on_repos(WRITER, r.pipeline.name),
    "StopPipeline": lambda r: on_repos(WRITER, r.pipeline.name),
    "DeleteAll": lambda _: admin("delete-all"),
    "InspectJob": lambda _: ANYONE,
    "ListJob": lambda _: ANYONE,
    "DeleteJob": lambda _: admin("delete-job"),
    "StopJob": lambda _: admin("stop-job"),
    "InspectDatum": lambda _: ANYONE,
    "ListDatum": lambda _: ANYONE,
    "RestartDatum": lambda _: admin("restart-datum"),
    "GetLogsPage": lambda _: ANYONE,
    "ChunkDone": lambda _: admin("ChunkDone (workers only)"),
    "ObjectRoots": lambda _: admin("garbage-collect"),
    # Secrets (Pachyderm 2.x's RPCs): cluster-wide and sensitive.
    "CreateSecret": lambda _: admin("create-secret"),
    "DeleteSecret": lambda _: admin("delete-secret"),
    "InspectSecret": lambda _: admin("inspect-secret"),
    "ListSecret": lambda _: admin("list-secret"),
}
