"""The embedded AWS emulator: moto in server mode, one request at a time.

moto's Kinesis loses records when PutRecords calls run concurrently (4 writer threads,
10,000 records put, 9,913 readable). Connections are still accepted by many threads, but a
lock lets one request at a time into moto. SQS long polls are the exception: moto sleeps
inside them, and holding the lock there would stall every other client.

Run: python -m rides.local.emulator --port 4566 [--parent-pid PID] [--max-lifetime S]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from rides.local.process import alive

HEALTH_PATH = "/_rides/health"


class SerializingMiddleware:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.started = time.time()
        self.requests = 0

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == HEALTH_PATH:
            body = (
                f'{{"status": "running", "pid": {os.getpid()}, '
                f'"uptime_s": {time.time() - self.started:.1f}, "requests": {self.requests}}}'
            ).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        self.requests += 1
        if environ.get("HTTP_X_AMZ_TARGET") == "AmazonSQS.ReceiveMessage":
            return self.app(environ, start_response)
        with self.lock:
            # Materialise the body inside the lock: moto does its work while iterating.
            return list(self.app(environ, start_response))


def make_app():
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    return SerializingMiddleware(DomainDispatcherApplication(create_backend_app))


def _watch(parent_pid: int | None, max_lifetime: float | None, stop) -> None:
    """Stop by ourselves when the parent is gone or the lifetime is over."""
    started = time.monotonic()
    while True:
        time.sleep(0.5)
        if parent_pid and not alive(parent_pid):
            stop()
            return
        if max_lifetime and time.monotonic() - started > max_lifetime:
            stop()
            return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--max-lifetime", type=float, default=None)
    args = parser.parse_args(argv)

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    os.environ.setdefault("MOTO_PORT", str(args.port))
    server = make_server(args.host, args.port, make_app(), threaded=True, request_handler=MotoRequestHandler)
    server.daemon_threads = True

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.parent_pid or args.max_lifetime:
        threading.Thread(target=_watch, args=(args.parent_pid, args.max_lifetime, stop), daemon=True).start()
    print(f"moto emulator listening on http://{args.host}:{server.server_port}", flush=True)
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
