"""The .eml outbox never holds a half-written message: a full disk leaves no file at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The kernel refuses to grow any file past 4 KiB (RLIMIT_FSIZE; SIGXFSZ ignored, so the write
# fails with EFBIG as on a full disk) while a 64 KiB message is written.
FULL_DISK = """
import resource, signal, sys
from membership_assets.notify.resources import FileOutboxEmail
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    FileOutboxEmail(directory=sys.argv[1]).send(["admins@example.org"], "alert", "x" * 65536)
except OSError as exc:
    print(type(exc).__name__, exc.errno)
else:
    print("sent")
"""


def test_a_disk_full_send_leaves_no_partial_eml(tmp_path):
    outbox = tmp_path / "outbox"
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(outbox)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.startswith("OSError"), out.stdout + out.stderr  # the sender sees the failure
    assert list(outbox.iterdir()) == []  # no 0-byte or truncated .eml, no temp file left


def test_a_sent_message_is_whole_and_the_only_file(tmp_path):
    from membership_assets.notify.resources import FileOutboxEmail

    path = Path(FileOutboxEmail(directory=str(tmp_path)).send(["a@example.org"], "report", "body text"))
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and path.suffix == ".eml"
    assert "body text" in path.read_text()
