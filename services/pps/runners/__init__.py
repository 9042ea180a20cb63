"""Runners: where a datum's user code runs (local bubblewrap sandboxes now,
Kubernetes pods later). ``base.Runner`` is the interface."""

from services.pps.runners.base import LineSink, Runner, RunResult

__all__ = ["LineSink", "RunResult", "Runner"]
