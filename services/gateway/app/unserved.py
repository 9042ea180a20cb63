"""The RPCs the gateway does not serve, and why: each answers UNIMPLEMENTED
with one line saying so (and what to do instead), over gRPC and HTTP alike.

``REFUSED`` names single RPCs of a served API; ``UNSERVED_APIS`` names whole
APIs of Pachyderm 1.7 that no front door serves yet (a call to any of their
methods, or to a service 1.7 never had, gets ``unserved_method``'s error)."""

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


# Pachyderm 1.7 APIs the gateway does not serve (yet), and why.
UNSERVED_APIS = {
    "pfs.ObjectAPI": (
        "it is not served: objects are internal here (content-addressed chunks "
        "and trees); read and write data through pfs.API (get-file, put-file)"
    ),
}


def unserved_method(full_method: str) -> Unimplemented:
    """The error a call to ``/<service>/<Method>`` that nothing serves gets."""
    service, _, method = full_method.strip("/").partition("/")
    why = UNSERVED_APIS.get(service)
    if why is None:
        why = (
            "no such API in Pachyderm 1.7 (served: pfs.API, pps.API, admin.API, "
            "auth.API, enterprise.API, versionpb.API)"
        )
    return Unimplemented(f"{service}/{method} is unimplemented: {why}", rpc=full_method)


def refusal(rpc: str) -> Unimplemented:
    """The error an RPC the gateway does not serve answers with."""
    return Unimplemented(REFUSED[rpc], rpc=rpc)
