"""Parsing gs://, as:// and wasb:// URLs against the cluster's settings; Azure
names and keys; the Azure SDK's lazy loading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from libs.azure_names import check_account, check_account_key, check_container
from libs.errors import InvalidArgument
from libs.objects.cloud import CloudConfig, CloudLocation, parse_cloud_url

ROOT = Path(__file__).resolve().parents[2]
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


def test_the_azure_sdk_loads_only_when_the_azure_backend_is_used(tmp_path: Path) -> None:
    """pachctl, the local backend and ``deploy microsoft`` never import the
    Azure SDK (seconds on a cold cache); the azure backend does."""
    code = """
import sys
from libs.config import Config
from libs.objects import open_object_store
import programs.pachctl.commands.deploy
open_object_store(Config.from_env("pfs", {"PACH_DATA_DIR": sys.argv[1]}).objects)
assert "azure.storage.blob" not in sys.modules, "loaded too early"
from libs.objects import AzureObjectStore
assert "azure.storage.blob" in sys.modules and AzureObjectStore.__name__
"""
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()


def test_azure_names_and_keys_are_checked() -> None:
    assert check_container("pach-data-1") == "pach-data-1"
    for bad in ("ab", "-abc", "abc-", "a--b", "Abc", "a_b", "x" * 64):
        with pytest.raises(InvalidArgument, match="container name"):
            check_container(bad)
    assert check_account("pachstore1") == "pachstore1"
    for bad in ("ab", "Pach", "pach-store", "x" * 25):
        with pytest.raises(InvalidArgument, match="account name"):
            check_account(bad)
    assert check_account_key("a2V5") == "a2V5"
    for bad in ("", "not base64", "a2V5!"):
        with pytest.raises(InvalidArgument, match="account key") as err:
            check_account_key(bad)
        assert not bad or bad not in str(err.value)
