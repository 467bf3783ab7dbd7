"""Event source mapping settings: one set, used by the local runner, the LocalStack deploy and
checked against the Terraform defaults (tests/test_infra.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventSourceSettings:
    batch_size: int = 500
    maximum_batching_window_in_seconds: int = 1
    starting_position: str = "TRIM_HORIZON"
    parallelization_factor: int = 1
    bisect_batch_on_function_error: bool = True
    maximum_retry_attempts: int = 5  # -1 = until the record expires
    maximum_record_age_in_seconds: int = 3600  # -1 = the stream's retention
    function_response_types: tuple[str, ...] = ("ReportBatchItemFailures",)

    def __post_init__(self):
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("batch_size must be 1-10000")
        if self.starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError("starting_position must be TRIM_HORIZON or LATEST")
        if not (self.maximum_record_age_in_seconds == -1 or 60 <= self.maximum_record_age_in_seconds <= 604_800):
            raise ValueError("maximum_record_age_in_seconds must be -1 or 60-604800")
        if not -1 <= self.maximum_retry_attempts <= 10_000:
            raise ValueError("maximum_retry_attempts must be -1..10000")
