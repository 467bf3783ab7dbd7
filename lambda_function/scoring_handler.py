"""AWS Lambda entry point for the scheduled batch scoring job (an EventBridge rule calls it).

Event: {"from_db": true} (the rides table's rows newer than the watermark: the frequent schedule),
{} (score last month), {"month": "2023-03"}, {"months": "2023-01:2023-03"} (backfill)
or {"input": "s3://bucket/file.parquet"}. Environment: MODEL_URI, MODEL_VERSION,
PREDICTIONS_OUTPUT (s3://bucket/prefix), and the predictions database: RIDES_DATABASE_SECRET_ARN,
RIDES_DATABASE_HOST, RIDES_DATABASE_PORT, RIDES_DATABASE_NAME (Aurora; the credentials are read
from Secrets Manager on each run), or RIDES_DATABASE_URL, or none (parquet only).
"""

from __future__ import annotations

import os
from datetime import date

from rides.batch.database import database_url as configured_database_url
from rides.batch.incremental import score_new_rides
from rides.batch.scoring import month_range, score
from rides.stream.model import get_model

# Lambda may only write under /tmp: downloads and local state go there.
os.environ.setdefault("RIDES_HOME", "/tmp/rides")
os.environ.setdefault("RIDES_DATA_CACHE", "/tmp/rides/tlc")


def previous_month(today: date | None = None) -> str:
    today = today or date.today()
    year, month = (today.year - 1, 12) if today.month == 1 else (today.year, today.month - 1)
    return f"{year:04d}-{month:02d}"


def sources(event: dict) -> list[str]:
    if event.get("input"):
        return [event["input"]]
    if event.get("months"):
        first, _, last = event["months"].partition(":")
        return month_range(first, last or first)
    return [event.get("month") or previous_month()]


def _time_left(context, reserve_ms: int = 60_000):
    if context is None or not hasattr(context, "get_remaining_time_in_millis"):
        return None
    return lambda: context.get_remaining_time_in_millis() > reserve_ms


def lambda_handler(event, context):
    model = get_model(os.environ["MODEL_URI"], version=os.environ.get("MODEL_VERSION") or None)
    output_root = os.environ["PREDICTIONS_OUTPUT"].rstrip("/")
    database_url = configured_database_url(os.environ)
    if (event or {}).get("from_db"):
        if not database_url:
            raise ValueError("from_db needs the environment's database (RIDES_DATABASE_* or RIDES_DATABASE_URL)")
        # Stop taking batches with a minute left: a batch is one transaction, so a timeout
        # mid-batch loses nothing, but it would waste the batch's work.
        summary = score_new_rides(database_url, model, keep_going=_time_left(context))
        return {
            "model_version": model.version,
            "from_db": {
                "job": summary.job,
                "rows_in": summary.rows_in,
                "scored": summary.scored,
                "skipped": summary.skipped,
                "watermark": summary.watermark,
                "batches": summary.batches,
                "seconds": round(summary.seconds, 2),
            },
        }
    results = []
    for source in sources(event or {}):
        name = source.rsplit("/", 1)[-1].removesuffix(".parquet")
        summary = score(
            source,
            model,
            output=f"{output_root}/{name}/model={model.version}",
            database_url=database_url,
            progress=False,
        )
        results.append(
            {
                "source": source,
                "rows_in": summary.rows_in,
                "scored": summary.scored,
                "skipped": summary.skipped,
                "rmse": summary.rmse,
                "output": summary.output,
                "parts_resumed": summary.parts_resumed,
                "seconds": round(summary.seconds, 2),
            }
        )
    return {"model_version": model.version, "results": results}
