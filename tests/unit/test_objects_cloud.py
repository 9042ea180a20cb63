"""Parsing gs://, as:// and wasb:// URLs against the cluster's settings."""

from __future__ import annotations

import pytest

from libs.errors import InvalidArgument
from libs.objects.cloud import CloudConfig, CloudLocation, parse_cloud_url

AZ = CloudConfig(azure_account="acct", azure_key="k2V5")


def test_gs_urls() -> None:
    assert parse_cloud_url("gs://b/dir/x.csv", CloudConfig()) == CloudLocation(
        "gs", "b", "dir/x.csv"
    )
    assert parse_cloud_url("gs://b", CloudConfig()) == CloudLocation("gs", "b", "")
    with pytest.raises(InvalidArgument, match="no bucket"):
        parse_cloud_url("gs:///x", CloudConfig())


def test_azure_urls_use_the_configured_account() -> None:
    assert parse_cloud_url("as://c/k/v", AZ) == CloudLocation("as", "c", "k/v", "acct")
    wasb = "wasb://c@acct.blob.core.windows.net/k"
    assert parse_cloud_url(wasb, AZ) == CloudLocation("as", "c", "k", "acct")
    with pytest.raises(InvalidArgument, match="'other' is not the cluster's Azure account"):
        parse_cloud_url("wasb://c@other.blob.core.windows.net/k", AZ)
    with pytest.raises(InvalidArgument, match="no Azure storage account is configured"):
        parse_cloud_url("as://c/k", CloudConfig())
    with pytest.raises(InvalidArgument, match="no container"):
        parse_cloud_url("as:///k", AZ)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACH_GCS_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("PACH_AZURE_ACCOUNT", "a")
    monkeypatch.setenv("PACH_AZURE_KEY", "k")
    cfg = CloudConfig.from_env()
    assert (cfg.gcs_endpoint, cfg.azure_account, cfg.azure_key) == ("http://127.0.0.1:1", "a", "k")
    monkeypatch.delenv("PACH_GCS_ENDPOINT")
    assert CloudConfig.from_env().gcs_endpoint == "https://storage.googleapis.com"
