"""Killing a real training process mid-run, for the resume tests."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import torch


def kill_after_first_checkpoint(cmd: list[str], run: Path, env: dict, timeout_s: float = 120.0) -> int:
    """Start ``cmd`` (a ``slowthink train`` writing to ``run``), SIGKILL it as soon as its first checkpoint is on disk,
    and return the step that checkpoint holds; fails if the run ends or stalls before checkpointing."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    try:
        while not (run / "ckpt" / "state.pt").exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.time() < deadline, "no checkpoint before the deadline"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return torch.load(run / "ckpt" / "state.pt", weights_only=False)["step"]
