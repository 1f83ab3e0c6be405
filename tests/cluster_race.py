"""Child-process bodies for tests/test_service_cluster.py (a module of their own, so that
``forkserver``/``spawn`` children import this and not the test module)."""

from __future__ import annotations

AUDIT_KEY = b"audit-key-for-the-cluster-tests-" + b"x" * 8


def claim_in_process(url: str, rid: str, instance: str, barrier, out) -> None:
    """Claim recovery ``rid`` as ``instance`` once everyone is ready; put (instance, won)."""
    from examples.recovery_service.db import service_db

    db = service_db(url)
    try:
        barrier.wait(30)
        out.put((instance, db.claim(rid, instance)))
    finally:
        db.close()


def append_many(url: str, n: int, tag: str, barrier) -> None:
    """Append ``n`` audit entries as actor ``tag`` once everyone is ready."""
    from liveness.audit import AuditLog

    log = AuditLog(url, AUDIT_KEY)
    try:
        barrier.wait(30)
        for k in range(n):
            log.append("load", actor=tag, k=k)
    finally:
        log.close()


def context():
    """forkserver (children fork from one process that imported the package once), else
    spawn."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["cluster_race", "examples.recovery_service.db", "liveness.audit"])
    return ctx
