"""The ceiling: a bare FastAPI app that answers the release path with a fixed JSON body, nothing else.

    python -m bench.ceiling --port PORT --sizes 1024,10240

``GET /v1/records/{size}`` returns ``{"data": "<size bytes>"}`` (precomputed at start: no crypto, no
ledger, no database), served by ``uvicorn.run`` with the gateway's own settings (``gateway/cli.py``:
default loop and HTTP implementation — uvloop and httptools, both installed —, one worker, access log
off, log level warning). Loaded by the same load generator with the same connections and duration as a
gateway run, it gives what the framework alone does on this machine *at that moment*.

Why in the same run: this is a shared 2-core VM and the same commit has measured 819/s and 524/s twenty
minutes apart. A gateway figure alone cannot tell a slower gateway from a busier machine; its ratio to a
ceiling measured minutes before, under the same noise, can (``ratio_to_ceiling`` in each run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI, Response

ROOT = Path(__file__).resolve().parents[1]


def create_app(sizes: list[int]) -> FastAPI:
    """One route, the gateway's release path; a record id is the body size it returns."""
    bodies = {str(s): b'{"data":"' + b"x" * s + b'"}' for s in sizes}
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/records/{rid}")
    async def release(rid: str) -> Response:
        return Response(bodies[rid], media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


@contextmanager
def ceiling_process(folder: Path, sizes: list[int], *, workers: int = 1) -> Iterator[str]:
    """Starts the bare app as its own process (``workers`` > 1: that many uvicorn workers) on a free port;
    yields its URL and stops it after."""
    from bench.gateway import wait_healthy
    from node_client._node import free_port

    port = free_port()
    log = (folder / f"ceiling-w{workers}.log").open("wb")
    cmd = [sys.executable, "-m", "bench.ceiling", "--port", str(port), "--sizes", ",".join(map(str, sizes))]
    cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=30, what=f"the ceiling app did not start; see {log.name}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sizes", required=True, help="comma-separated body sizes in bytes")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args(argv)
    if args.workers > 1:  # uvicorn's own workers (one shared socket) need the app by name
        os.environ[_SIZES_ENV] = args.sizes
        uvicorn.run(
            "bench.ceiling:app_from_env",
            factory=True,
            workers=args.workers,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
        )
        return
    app = create_app([int(s) for s in args.sizes.split(",")])
    # the gateway's call (gateway/cli.py), word for word but the app
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


_SIZES_ENV = "HCL_CEILING_SIZES"


def app_from_env() -> FastAPI:
    """The app of a uvicorn worker: the sizes come from the parent's environment."""
    return create_app([int(s) for s in os.environ[_SIZES_ENV].split(",")])


if __name__ == "__main__":
    main()
