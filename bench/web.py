"""Web benchmark: `rides serve` beside the course's Flask + gunicorn pattern, same model, one
worker each, server on one core and load on the other (loopback only).

Peak requests/s comes from wrk (closed loop, 16 connections); latency at half of that peak
from bench.loadgen (open loop, fixed rate).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA = """wrk.method = "POST"
wrk.body = '{"ride_id": 156, "ride": {"PULocationID": 130, "DOLocationID": 205, "trip_distance": 3.66, \
"lpep_pickup_datetime": "2021-02-03T08:15:00"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-api-key"] = "{key}"
"""
# Ours runs as it does outside the local stack: every request's API key checked (Flask has none).
BENCH_KEY = "rk_bench-key-not-a-secret"


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):  # Debian's package, as the README says
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is needed for the web benchmark: apt-get install wrk")
    return found


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(port: int, proc: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/predict", timeout=1)
        except urllib.error.HTTPError:
            return  # answering (405 for GET): up
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def measure(name: str, command: list[str], env: dict, wrk: str, lua: Path) -> dict:
    port = _free_port()
    cores = sorted(os.sched_getaffinity(0))
    server_core, load_core = str(cores[0]), str(cores[-1])
    log = Path(tempfile.mkdtemp()) / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", server_core, *[c.replace("{port}", str(port)) for c in command]],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            _wait(port, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{name}: {exc}\n{log.read_text()[-2000:]}") from None
        url = f"http://127.0.0.1:{port}/predict"
        subprocess.run(
            ["taskset", "-c", load_core, wrk, "-t1", "-c16", "-d3s", "-s", str(lua), url],
            capture_output=True,
            check=True,
        )  # warm-up
        out = subprocess.run(
            ["taskset", "-c", load_core, wrk, "-t1", "-c16", "-d10s", "-s", str(lua), url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        peak = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        half = subprocess.run(
            [
                "taskset",
                "-c",
                load_core,
                sys.executable,
                "-m",
                "bench.loadgen",
                "--url",
                url,
                "--rate",
                str(round(peak / 2)),
                "--seconds",
                "10",
                "--api-key",
                BENCH_KEY,
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env=env,
        ).stdout
        return {"name": name, "peak_rps": peak, "at_half_peak": json.loads(half.strip().splitlines()[-1])}
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def run(model_dir: Path) -> dict:
    wrk = ensure_wrk()
    lua = Path(tempfile.mkdtemp()) / "post.lua"
    lua.write_text(LUA.replace("{key}", BENCH_KEY))
    from rides.local.backend import LOCAL_ENV
    from rides.web.auth import digest

    # No AWS needed for the quick answer: fake credentials, an endpoint where nothing listens.
    env = {
        **os.environ,
        **LOCAL_ENV,
        "MODEL_URI": str(model_dir),
        "MODEL_VERSION": "1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "RIDES_API_KEYS": json.dumps({"bench": {"sha256": digest(BENCH_KEY), "scopes": ["predict"]}}),
    }
    env.pop("RIDES_WEB_AUTH", None)
    bin_dir = Path(sys.executable).parent
    ours = measure(
        "rides serve (uvicorn, 1 worker)",
        [str(bin_dir / "rides"), "serve", "--port", "{port}", "--workers", "1"],
        env,
        wrk,
        lua,
    )
    flask = measure(
        "Flask + gunicorn (1 sync worker)",
        [str(bin_dir / "gunicorn"), "-w", "1", "-b", "127.0.0.1:{port}", "bench.flask_app:app"],
        env,
        wrk,
        lua,
    )
    return {"ours": ours, "flask": flask, "ratio": ours["peak_rps"] / flask["peak_rps"]}


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1])), indent=2))
