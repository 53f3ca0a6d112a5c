"""A Cloud Storage API on loopback (gcp-storage-emulator from PyPI) for the scratch, compute log
and isolated-run tests: google-cloud-storage and dagster-gcp reach it via STORAGE_EMULATOR_HOST."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

# create_server cannot report the port of a port-0 bind, so the child prints it.
_SERVE = """
import sys, time
from gcp_storage_emulator.server import create_server
server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=sys.argv[1])
server.start()
print(server._api._httpd.server_address[1], flush=True)
while True:
    time.sleep(3600)
"""


@dataclass(frozen=True)
class Emulator:
    url: str
    bucket: str

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to use the emulator instead of storage.googleapis.com."""
        return {"STORAGE_EMULATOR_HOST": self.url, "GOOGLE_CLOUD_PROJECT": "membership-test"}

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="membership-test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def names(self, prefix: str = "") -> list[str]:
        return sorted(b.name for b in self.client().list_blobs(self.bucket, prefix=prefix))


@contextmanager
def gcs_emulator(bucket: str = "membership-scratch") -> Iterator[Emulator]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, bucket], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.strip().isdigit():
            raise RuntimeError("the GCS emulator did not start (is gcp-storage-emulator installed?)")
        yield Emulator(url=f"http://127.0.0.1:{int(line)}", bucket=bucket)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def gcs() -> Iterator[Emulator]:
    with gcs_emulator() as emulator:
        yield emulator


@pytest.fixture
def gcs_env(gcs, monkeypatch) -> Emulator:
    """The emulator, with this process's Cloud Storage clients pointed at it."""
    for key, value in gcs.env.items():
        monkeypatch.setenv(key, value)
    return gcs
