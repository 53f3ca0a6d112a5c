"""`python -m membership_assets dev` stops on one SIGINT (Ctrl-C) with every process it started,
and its simulators listen on the ports the environment gives them (issue 16.6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from membership_assets.settings import SIMULATED_AB_TOKEN, SIMULATED_DJANGO_TOKEN

from .test_deployment_topology import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow


def answers(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return requests.get(url, headers=headers or {}, timeout=2).ok
    except requests.RequestException:
        return False


def test_one_sigint_stops_dev_and_every_process_it_started(tmp_path):
    web, ab, django = free_port(), free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "MEMBERSHIP_"))},
        "DAGSTER_HOME": str(tmp_path / "home"),
        "MEMBERSHIP_ENV": "local",
        "MEMBERSHIP_STATE_DIR": str(tmp_path / "state"),
        "ACTION_BUILDER_SIM_PORT": str(ab),
        "DJANGO_SIM_PORT": str(django),
        "ACTION_BUILDER_SIM_PEOPLE": "50",
        "DJANGO_SIM_MEMBERS": "50",
    }
    command = [sys.executable, "-m", "membership_assets", "dev", "--", "-h", "127.0.0.1", "-p", str(web)]
    with open(tmp_path / "dev.log", "wb") as log:
        dev = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        # The simulators on the ports the environment chose, the UI up, its children started.
        wait_for(
            "the simulators",
            lambda: (
                answers(f"http://127.0.0.1:{ab}/api/rest/v1", {"OSDI-API-Token": SIMULATED_AB_TOKEN})
                and answers(
                    f"http://127.0.0.1:{django}/api/members/eligible",
                    {"Authorization": f"Token {SIMULATED_DJANGO_TOKEN}"},
                )
            ),
            timeout=120,
        )
        wait_for("the Dagster UI", lambda: answers(f"http://127.0.0.1:{web}/server_info"), timeout=180)
        tree = wait_for(
            "dagster dev's webserver, daemon and code server",
            lambda: (kids := psutil.Process(dev.pid).children(recursive=True)) and len(kids) >= 4 and kids,
            timeout=120,
        )
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=60)  # one signal is enough: no second Ctrl-C, no kill
    except BaseException:
        print((tmp_path / "dev.log").read_text(errors="replace")[-3000:])
        for p in psutil.Process(dev.pid).children(recursive=True) if dev.poll() is None else []:
            p.kill()
        dev.kill()
        raise
    print(f"dev stopped with {len(tree)} descendants: " + ", ".join(p.name() for p in tree if p.is_running()))
    survivors = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in survivors:  # leave nothing behind, even when the test fails
        p.kill()
    assert not survivors, [" ".join(p.cmdline()[:4]) for p in survivors]
    assert not answers(f"http://127.0.0.1:{web}/server_info")


# A stand-in for `dagster dev` that behaves as reported: it exits on SIGINT itself but leaves
# the process it started (here a long sleep, as webserver/daemon/code servers were) running.
LEAKY_CHILD = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print(child.pid, flush=True)
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
time.sleep(300)
"""

WRAPPER = """
import sys
from membership_assets.__main__ import run_until_signalled
sys.exit(run_until_signalled([sys.executable, "-c", sys.argv[1]], {}))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_stops_the_command_and_what_it_left_running(sig):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    wrapper = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, LEAKY_CHILD], env=env, cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        grandchild = psutil.Process(int(wrapper.stdout.readline()))
        tree = psutil.Process(wrapper.pid).children(recursive=True)
        assert grandchild in tree and len(tree) == 2
        wrapper.send_signal(sig)
        wrapper.wait(timeout=30)
        gone, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        for p in psutil.Process(wrapper.pid).children(recursive=True) if wrapper.poll() is None else []:
            p.kill()
        wrapper.kill()
