"""Runs a script on 8 CPU devices: ``--xla_force_host_platform_device_count``
only takes effect before JAX starts, so each run is a fresh Python process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jaxctc


def run_on_8_devices(script: str, *args: str) -> dict:
    """Runs ``script`` (Python source, ``args`` as its ``sys.argv[1:]``) with
    this checkout importable and returns the JSON object its last line prints."""
    root = Path(jaxctc.__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = " ".join(  # after the suite's own (conftest.py)
        [env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
    ).strip()
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
