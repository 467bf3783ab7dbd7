"""boto3 clients for long-lived processes (Lambda containers) that keep only what they use.

To build a client botocore parses JSON data files: endpoints.json alone becomes ~7 MB of
Python objects, S3's service model and endpoint rules ~5 MB. It keeps every one of them for
as long as the session lives (the default session lives forever) and in the loader cache
each client holds. A built client needs none of them: its service model and endpoint rules
keep their own references, and a paginator or waiter loads its file again when asked.
Against a 128 MB Lambda that is a tenth of the memory, so the Lambda handlers build their
clients here, and the model loader drops its S3 client once the model is on disk.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable

import boto3
from botocore.config import Config

# The clients of the Lambda handlers. Each call makes one attempt of at most 1 s to connect and
# 2 s to read: our own loops retry (rides.stream.retry.Backoff), and only while the invocation has
# time left, so no call can run past the function's timeout. botocore's defaults (60 s reads,
# retried) could; a PutRecords of 500 records takes ~50-200 ms inside a region.
LAMBDA_CALL_SECONDS = 3.0
LAMBDA_CLIENT_CONFIG = Config(
    connect_timeout=1,
    read_timeout=2,
    retries={"mode": "standard", "total_max_attempts": 1},
    max_pool_connections=16,
)
# What a handler keeps of its time for calls under way and for answering: `time_left()` is the
# remaining time minus this, and no call starts once it is not positive.
RESERVE_SECONDS = LAMBDA_CALL_SECONDS + 0.5


def lean_clients(services: Iterable[str], config: Config | None = None) -> dict[str, object]:
    """{service: client} for `services`, from a session of their own whose parsed data files
    are released. `AWS_ENDPOINT_URL` and the other standard variables apply as for
    `boto3.client`."""
    session = boto3.session.Session()
    made = {service: session.client(service, config=config) for service in services}
    for client in made.values():
        _release_parsed_files(client)
    del session
    # A botocore session's parts refer to each other: only the cycle collector frees them.
    gc.collect()
    return made


def _release_parsed_files(client) -> None:
    """Empty the loader cache a client holds (shared with its session's other clients)."""
    cache = getattr(getattr(client, "_loader", None), "_cache", None)
    if isinstance(cache, dict):  # botocore's instance_cache; anything else: keep, cost only memory
        cache.clear()


def short_lived_client(service: str, config: Config | None = None):
    """A client from its own session, for a job done once (fetching a model at start-up):
    drop it and call `gc.collect()` and everything it loaded is freed."""
    return boto3.session.Session().client(service, config=config)


def list_shards(kinesis, stream_name: str) -> list[dict]:
    """Every shard of a stream, open and closed, page by page (ListShards takes the stream's
    name on the first call only, then the token alone)."""
    shards, token = [], None
    while True:
        page = kinesis.list_shards(**({"NextToken": token} if token else {"StreamName": stream_name}))
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            return shards
