"""The C++ decode step's build: it can be turned off, a failed build falls back to torch, and a build lock is
waited for (a live build) or removed (a killed one) instead of hanging every later command."""

import os
import time

import pytest


def test_native_kernels_can_be_turned_off_and_a_failed_build_falls_back(monkeypatch):
    import torch.utils.cpp_extension as cpp

    from slowthink.engine.native import decode_kernels

    monkeypatch.setenv("SLOWTHINK_NATIVE", "0")
    assert decode_kernels.__wrapped__() is None
    monkeypatch.setenv("SLOWTHINK_NATIVE", "1")

    def broken(**kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp, "load", broken)
    with pytest.warns(UserWarning, match="no compiler here.*plain-torch"):
        assert decode_kernels.__wrapped__() is None


def test_build_lock_of_a_live_build_is_waited_for_and_a_stale_one_removed(tmp_path, capsys):
    import threading

    from slowthink.engine.native import wait_for_build_lock

    lock = tmp_path / "lock"
    wait_for_build_lock(lock)  # no lock: returns at once, says nothing
    assert capsys.readouterr().err == ""
    lock.touch()  # a live build: waited for until its lock goes
    threading.Timer(0.3, lock.unlink).start()
    t0 = time.time()
    wait_for_build_lock(lock, stale_s=60, poll_s=0.05)
    assert 0.25 < time.time() - t0 < 5 and "waiting for the C++ decode build" in capsys.readouterr().err
    lock.touch()  # a killed build's lock: removed once it is older than stale_s, not waited on forever
    os.utime(lock, (time.time() - 120, time.time() - 120))
    wait_for_build_lock(lock, stale_s=60, poll_s=0.05)
    assert not lock.exists() and "did not finish" in capsys.readouterr().err

