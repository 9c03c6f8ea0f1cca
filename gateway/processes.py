"""Several gateway processes on one machine (``settings.workers > 1``): one GIL is one core.

The primary process builds the whole gateway but serves no HTTP: it owns the journal writer (served to
the workers on a Unix socket, :mod:`gateway.ledger.journal_service`), the anchorer, the indexer (whose
state it publishes, :mod:`gateway.ledger.indexer_state`) and the data-dir lock. It binds one listening
socket per worker on the same port (``SO_REUSEPORT``: the kernel spreads connections evenly, where one
shared accept queue lets the busiest worker take most) and starts ``workers`` HTTP processes, each
inheriting its own; a worker that dies is started again on the same socket, whose queued connections
wait for it. A worker whose primary is gone fails closed (its appends have nowhere to go: 503
``journal_unavailable``, /healthz degraded) and exits shortly after, so a restarted primary takes over.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from gateway.api.system import journal_check
from gateway.app import GatewayServer, create_app, server_config
from gateway.observability import MULTIPROC_ENV, configure_logging
from gateway.settings import GatewaySettings
from gateway.wiring import Components, build_components, build_worker_components

__all__ = ["ORPHAN_GRACE", "WORKER_FD_ENV", "serve", "serve_worker"]

log = logging.getLogger("hcl.gateway.processes")

#: the inherited listening socket's descriptor, in a worker's environment
WORKER_FD_ENV = "HCL_WORKER_FD"
#: seconds a worker keeps answering (503) after its primary is gone, then it exits
ORPHAN_GRACE = 1.0


def serve(settings: GatewaySettings) -> None:
    """Runs the gateway until SIGTERM/SIGINT: in this process, or as a primary and its workers."""
    if settings.workers == 1:
        GatewayServer(server_config(settings, create_app(settings))).run()
    else:
        _Primary(settings).run()


class _Primary:
    """The primary process: components started, port bound, workers supervised."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.children: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self.metrics_dir = settings.data_dir.resolve() / "metrics"  # the workers' prometheus values

    def run(self) -> None:
        configure_logging(self.settings.log_level)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)  # the last run's counts must not add to this one's
        self.metrics_dir.mkdir(parents=True)
        components = build_components(self.settings)
        components.start()
        try:
            listeners = [self._bind() for _ in range(self.settings.workers)]
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stop.set())
            self.children = [self._spawn(listener) for listener in listeners]
            self._wait_serving()
            if components.anchorer is not None:
                components.anchorer.start()
            while not self._stop.wait(0.2):
                _publish_journal_check(components)
                for i, child in enumerate(self.children):
                    if child.poll() is not None:
                        log.error("worker %d exited with %s; starting another", child.pid, child.returncode)
                        self.children[i] = self._spawn(listeners[i])
        finally:
            self._stop_children()
            components.stop()

    def _wait_serving(self, timeout: float = 60.0) -> None:
        """Until a worker answers HTTP (or ``timeout``): anchoring starts then, as it does in one process
        once its server is up, so the backlog of a previous run is anchored by a gateway that serves."""
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            conn = http.client.HTTPConnection(host, self.settings.port, timeout=1)
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
            finally:
                conn.close()
        log.warning("no worker answered within %.0f s; anchoring starts anyway", timeout)

    def _bind(self) -> socket.socket:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((s.host, s.port))
        listener.listen(2048)
        listener.set_inheritable(True)
        return listener

    def _spawn(self, listener: socket.socket) -> subprocess.Popen[bytes]:
        """A worker with the listening socket and this process's effective settings (CLI options included)."""
        s = self.settings
        env = {
            **os.environ,
            WORKER_FD_ENV: str(listener.fileno()),
            "HCL_HOST": s.host,
            "HCL_PORT": str(s.port),
            "HCL_PUBLIC_URL": s.public_url,
            "HCL_DATA_DIR": str(s.data_dir.resolve()),
            "HCL_WORKERS": str(s.workers),
            MULTIPROC_ENV: str(self.metrics_dir),
        }
        code = "from gateway.processes import serve_worker; serve_worker()"
        return subprocess.Popen([sys.executable, "-c", code], pass_fds=(listener.fileno(),), env=env)

    def _stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()  # uvicorn's graceful shutdown: requests in flight get their answers
        deadline = time.monotonic() + 30
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def _publish_journal_check(c: Components) -> None:
    """Writes the journal's health for the workers' /healthz (atomically: a reader sees one whole check)."""
    check = journal_check(c)
    if check is None:
        return
    path = c.settings.journal_status_path
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(check.model_dump_json().encode())
        os.replace(tmp, path)
    except OSError as exc:  # the workers then call the status stale: degraded, fail closed
        log.error("cannot publish the journal status: %r", exc)


def serve_worker() -> None:
    """A worker's main: serves the app on the inherited socket until told to stop or orphaned."""
    settings = GatewaySettings()
    listener = socket.socket(fileno=int(os.environ[WORKER_FD_ENV]))
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), name="hcl-orphan-watch", daemon=True).start()
    app = create_app(settings, build=build_worker_components)
    GatewayServer(server_config(settings, app)).run(sockets=[listener])


def _exit_when_orphaned(parent: int) -> None:
    """Once the primary is gone (this process re-parented), answer 503s for a grace period, then stop."""
    while os.getppid() == parent:
        time.sleep(0.5)
    log.error("the primary process is gone: releases are refused; exiting in %.0f s", ORPHAN_GRACE)
    time.sleep(ORPHAN_GRACE)
    os.kill(os.getpid(), signal.SIGTERM)
