"""Ray mode (slowthink.distributed): the checks of tests/ray_checks.py, run in ONE subprocess (Ray starts once)
inside a network namespace with only loopback, so Ray's traffic cannot leave the machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHECKS = ["grpo_step_equals_local_then_versions_and_resume", "killed_and_slow_workers_are_replaced",
          "async_staleness_bound", "two_learners_gradient"]


def _can_isolate() -> str:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2) to run Ray in a loopback-only network namespace"
    if os.geteuid() != 0:
        return "needs root for unshare -n (a loopback-only network namespace for Ray)"
    return ""


@pytest.fixture(scope="module")
def results(sft_model, tmp_path_factory) -> dict:
    import sys

    script = Path(__file__).resolve().parent / "ray_checks.py"
    out = tmp_path_factory.mktemp("ray")
    inner = f"ip link set lo up && exec {sys.executable} {script} {sft_model} {out}"
    # -p -f --mount-proc: a PID namespace too, so every Ray process dies with the check script, whatever happens
    proc = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "sh", "-c", inner], capture_output=True,
                          text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the Ray checks printed no result (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


@pytest.mark.skipif(bool(_can_isolate()), reason=_can_isolate() or "ok")
@pytest.mark.parametrize("check", CHECKS)
def test_ray(results, check):
    assert check in results, f"{check} did not run: {sorted(results)}"
    assert results[check] == "ok", results[check]


def test_local_mode_never_imports_ray():
    import subprocess
    import sys

    code = ("import sys; import slowthink.cli, slowthink.rl.grpo, slowthink.rl.ppo, slowthink.rl.star, "
            "slowthink.distributed.setup; assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_ray_options_parse_and_validate(sft_model):
    from slowthink.cli_parser import build_parser
    from slowthink.config import ConfigError
    from slowthink.rl.grpo import GRPOConfig

    parser = build_parser()
    assert parser.parse_args(["train", "grpo", "--ray"]).ray == "local"  # no address: start one here
    assert parser.parse_args(["train", "star", "--ray", "10.0.0.1:6379"]).ray == "10.0.0.1:6379"
    assert parser.parse_args(["train", "ppo"]).ray is None
    for bad, field in [(dict(learners=2), "learners"), (dict(max_staleness=2), "max_staleness"),
                       (dict(ray="local", rollout_workers=0), "rollout_workers"),
                       (dict(objective="ppo"), "objective"), (dict(is_correction="row"), "is_correction"),
                       (dict(is_cap=0.5), "is_cap"), (dict(dual_clip=1.0), "dual_clip")]:
        with pytest.raises(ConfigError, match=f"'{field}'"):
            GRPOConfig(init=sft_model, **bad)
