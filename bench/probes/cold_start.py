"""Cold start of the consumer: import, the first invocation (one record), then a full batch;
peak memory after each. Peak memory comes from VmHWM: ru_maxrss survives exec on Linux and
would report the parent's peak.

    python -m bench.probes.cold_start EVENT_FILE      (prints one JSON object)
"""

import json
import sys
import time


def peak_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


class Context:
    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def main(event_file: str) -> None:
    started = time.perf_counter()
    from lambda_function.handler import lambda_handler

    imported = time.perf_counter() - started
    with open(event_file) as handle:
        event = json.load(handle)
    lambda_handler({"Records": event["Records"][:1]}, Context())
    first = time.perf_counter() - started
    rss_cold = peak_mb()
    lambda_handler(event, Context())
    print(
        json.dumps(
            {"import_s": imported, "cold_start_s": first, "rss_cold_mb": rss_cold, "rss_10k_batch_mb": peak_mb()}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
