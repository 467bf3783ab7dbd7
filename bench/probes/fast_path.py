"""The consumer's fast path in a process holding only what a Lambda container holds (not the
bench's training and MLflow imports), timed batch by batch after one warm-up. With DRY_RUN
false in the environment it publishes too (end to end).

    python -m bench.probes.fast_path EVENT_FILE REPEATS [RECORDS]   (prints records and times as JSON)
"""

import json
import sys
import time


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def main(event_file: str, repeats: int, records: int | None = None) -> None:
    from lambda_function.handler import lambda_handler

    with open(event_file) as handle:
        event = json.load(handle)
    event["Records"] = event["Records"][:records]
    lambda_handler(event, Context())
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        lambda_handler(event, Context())
        times.append(time.perf_counter() - started)
    print(json.dumps({"records": len(event["Records"]), "times": times}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
