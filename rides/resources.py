"""Resource names: the staging defaults that Terraform declares and the local stack creates.

tests/test_infra.py holds this list and `infra/` together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class StackNames:
    input_stream: str = "ride-events"
    predictions_stream: str = "ride-predictions"
    decisions_stream: str = "ride-decisions"
    dead_letter_queue: str = "ride-events-dlq"
    # Where the event source mapping sends metadata of batches that exhausted their retries.
    failed_batches_queue: str = "ride-events-failed-batches"
    model_bucket: str = "rides-models-stg"
    decisions_table: str = "ride-decisions"
    consumer_function: str = "ride-duration-consumer"
    experiment: str = "ride-duration"
    registered_model: str = "ride-duration"

    @classmethod
    def from_env(cls) -> StackNames:
        """Each name can be overridden, e.g. RIDES_MODEL_BUCKET=my-bucket."""
        defaults = cls()
        return cls(
            **{
                name: os.environ.get(f"RIDES_{name.upper()}", getattr(defaults, name))
                for name in defaults.__dataclass_fields__
            }
        )


REGION = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
