"""Shared by the serving tests (test_serve, test_serve_effort, test_jobs_traces, test_remote_backend) and
test_effort: a free loopback port, an app served by uvicorn on a daemon thread, the tiny model
over-fitted to answer "3+4" with 7, and a router that always picks the same arm.

A plain module rather than conftest fixtures: the tests build servers with different apps and scopes
(module fixtures, a context manager around a fake remote), so they call these directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

Q = [{"role": "user", "content": "3+4"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app, start_timeout: float = 20.0, **config):
    """Serve ``app`` on 127.0.0.1 and a free port until the block ends; yields the port. ``config``: more
    ``uvicorn.Config`` arguments (e.g. ``serve.guard.uvicorn_settings``)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **{"log_level": "warning", **config}))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + start_timeout
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def overfit_seven(tok):
    """The tiny model, trained on one problem until greedy decoding answers it (both modes): "3+4" ->
    "7" (System-1) and "3+4=7\\n</think>\\n\\n7" (System-2). A fresh model each call."""
    import torch

    from slowthink.models import build_model
    from slowthink.train.sft import token_mean_backward
    from slowthink.tokenizer import render_example

    torch.manual_seed(0)
    model = build_model("tiny", tok, seed=0)
    examples = [render_example(tok, Q, "system1", "7"), render_example(tok, Q, "system2", "3+4=7\n</think>\n\n7")]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        opt.zero_grad()
        token_mean_backward(model, examples, tok.pad_token_id, 1)
        opt.step()
    return model.eval()


def fixed_router(success: list[float], cost: list[float]):
    """A router on the s1 signal whose predictions ignore the features: it always picks the same arm."""
    import numpy as np

    from slowthink.router import Router
    from slowthink.router.arms import default_arms
    from slowthink.router.predictor import Predictor
    from slowthink.router.signals import S1_NAMES

    arms = default_arms(max_tokens=32, ns=(4,))
    f, a = len(S1_NAMES), len(arms)
    logit = np.log(np.array(success) / (1 - np.array(success)))
    pred = Predictor(mean=np.zeros(f), std=np.ones(f), w_success=np.zeros((f, a)), b_success=logit,
                     w_cost=np.zeros((f, a)), b_cost=np.log1p(np.array(cost, float)))
    return Router(arms=arms, signals=("s1",), predictor=pred, feature_names=S1_NAMES, tradeoff=0.05)


def wait_until_serving(proc, port: int, key: str, timeout_s: float = 90.0):
    """``proc`` (a server subprocess) once it answers ``/v1/models`` on ``port``; kills it and fails the test if it
    exits or does not come up within ``timeout_s`` (a test never leaves a server behind)."""
    import httpx

    deadline = time.time() + timeout_s
    try:
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {key}"},
                             timeout=2).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "server did not come up"
            time.sleep(0.1)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def stop_server(proc, timeout_s: float = 30.0) -> None:
    """SIGTERM a server process (it drains and exits); SIGKILL it if it has not exited within ``timeout_s``."""
    import signal
    import subprocess

    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
