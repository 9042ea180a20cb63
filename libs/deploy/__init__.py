"""Kubernetes manifests of a cluster (``pachctl deploy``) and of pipeline
workers (pps's Kubernetes runner), generated from code: pure functions from
options to plain dicts, no API calls (docs/kubernetes.md)."""
