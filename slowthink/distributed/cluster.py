"""Connecting to Ray: a running head (``--ray ADDRESS``) or a local one started here (``--ray`` alone)."""

from __future__ import annotations


def ray_module():
    """``ray``, imported only when a run asks for it (a local run never starts Ray)."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is a declared dependency
        raise RuntimeError("--ray needs the ray package (pip install 'ray==2.60.0')") from e
    return ray


def connect(address: str, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` or, for ``local``, start one on this machine; returns whether this call
    started or joined it (False: Ray was already initialised in this process, e.g. by a test, and is reused).

    A local start binds 127.0.0.1 where it can; Ray still advertises the machine's interface address for its
    object transfers, so tests and benchmarks run it in a network namespace that has only loopback
    (``loopback_command``)."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    if not address:
        raise ValueError("ray: give 'local' or the address of a running head, e.g. 10.0.0.1:6379")
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    else:
        ray.init(address=address, log_to_driver=False)
    return True


def kill_actors(actors) -> None:
    """Kill every actor of a group for good; one that is already dead (a crashed worker) is skipped."""
    ray = ray_module()
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone: nothing left to stop
            pass


def loopback_command(python_args: list[str]) -> list[str]:
    """A command that runs ``python python_args`` in a fresh network namespace with only loopback up, so Ray's
    traffic cannot leave the machine (needs root or user namespaces: ``unshare -n``)."""
    import shlex
    import sys

    inner = "ip link set lo up && exec " + " ".join(shlex.quote(a) for a in [sys.executable, *python_args])
    return ["unshare", "-n", "sh", "-c", inner]
