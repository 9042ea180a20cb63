"""Real emulator processes for the gs:// and as:// tests: the Google Cloud
Storage emulator (``gcp-storage-emulator``, from PyPI, in the project's dev
packages) and Azurite (Microsoft's Azure Storage emulator, from npm,
installed by ``tests/servers/install-azurite.sh`` under ``.tools/``).

Each runs on a free loopback port with its data under a temporary dir; the
``env()`` of each is what a cluster needs to reach it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from programs.cluster.natsserver import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft).
AZURE_ACCOUNT = "devstoreaccount1"
AZURE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class GcsEmulator(Emulator):
    bucket: str = "pach-gs"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"PACH_GCS_ENDPOINT": self.endpoint}


@dataclass
class AzureEmulator(Emulator):
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURE_ACCOUNT}"

    def env(self) -> dict[str, str]:
        return {
            "PACH_AZURE_ACCOUNT": AZURE_ACCOUNT,
            "PACH_AZURE_KEY": AZURE_KEY,
            "PACH_AZURE_ENDPOINT": self.endpoint,
        }


def start_gcs(tmp: Path, bucket: str = "pach-gs") -> GcsEmulator:
    exe = Path(sys.executable).parent / "gcp-storage-emulator"
    port = free_port()
    log = tmp / "gcs.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *(str(exe), "start", "--host", "127.0.0.1", "--port", str(port)),
                *("--in-memory", "--default-bucket", bucket),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port("127.0.0.1", port, 30)
    return GcsEmulator(proc, port, log, bucket)


def start_azurite(tmp: Path) -> AzureEmulator:
    if not AZURITE.exists():
        raise FileNotFoundError(f"{AZURITE} is missing: run `make test-deps`")
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("node is missing: run `make test-deps`")
    port = free_port()
    log = tmp / "azurite.log"
    data = tmp / "azurite"
    data.mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *(str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port)),
                *("--location", str(data), "--skipApiVersionCheck", "--loose"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port("127.0.0.1", port, 60)
    return AzureEmulator(proc, port, log)
