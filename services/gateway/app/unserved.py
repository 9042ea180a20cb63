"""The RPCs the gateway does not serve, and why: each answers UNIMPLEMENTED
with a message saying what to do instead, over gRPC and HTTP alike."""

from __future__ import annotations

from libs.errors import Unimplemented

# pps.API RPCs the gateway does not serve, and why.
REFUSED = {
    "CreateJob": (
        "CreateJob is deprecated in Pachyderm 1.7: a pipeline creates its jobs "
        "when its input commits finish; create or update a pipeline instead"
    ),
    "RerunPipeline": (
        "RerunPipeline is not implemented (nor was it in Pachyderm 1.7); "
        "update the pipeline with reprocess set to process every datum again"
    ),
    "ActivateAuth": (
        "pps ActivateAuth is not available yet: pipelines do not hold auth tokens here"
    ),
}


def refusal(rpc: str) -> Unimplemented:
    """The error an RPC the gateway does not serve answers with."""
    return Unimplemented(REFUSED[rpc], rpc=rpc)
