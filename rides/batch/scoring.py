"""Batch scoring: a month of rides → predictions parquet + database rows.

- Streams the input parquet in record batches, so memory stays flat for any input size.
- Writes one part file per input batch (`part-00000.parquet`, …), each atomically: a crashed
  run resumes by skipping the parts that exist (their numbers are read back for the summary).
- Upserts rows keyed on (ride_id, model_version): running a month again changes nothing.
- Same model loader and feature function as the consumer and the web service.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rides.data import COLUMNS, Month, cast_columns, input_problems, local_path, month_of, usable
from rides.settings import state_dir
from rides.stream.features import features_from_frame
from rides.stream.model import LoadedModel

BATCH_ROWS = 131_072
SKIPPED_KEY = b"rides_skipped"
FINGERPRINT_KEY = b"rides_fingerprint"
TABLE = "ride_predictions"
OUTPUT_SCHEMA = pa.schema(
    [
        ("ride_id", pa.string()),
        ("lpep_pickup_datetime", pa.timestamp("us")),
        ("PULocationID", pa.int64()),
        ("DOLocationID", pa.int64()),
        ("trip_distance", pa.float64()),
        ("passenger_count", pa.float64()),
        ("predicted_duration", pa.float64()),
        ("actual_duration", pa.float64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
    ]
)


def default_database_url() -> str:
    """The environment's database (rides.batch.database), else SQLite under the local state directory."""
    from rides.batch.database import database_url

    return database_url(os.environ) or f"sqlite:///{state_dir() / 'predictions.db'}"


@dataclass
class ScoreSummary:
    source: str
    output: str
    model_version: str
    rows_in: int = 0
    scored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    parts_written: int = 0
    parts_resumed: int = 0
    parts_replaced: int = 0
    parts_removed: int = 0
    seconds: float = 0.0
    # sums over rows whose actual duration is 1-60 minutes (the range the model is for)
    _sq_error: float = 0.0
    _abs_error: float = 0.0
    compared: int = 0

    @property
    def rmse(self) -> float:
        return float(np.sqrt(self._sq_error / self.compared)) if self.compared else float("nan")

    @property
    def mae(self) -> float:
        return self._abs_error / self.compared if self.compared else float("nan")

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def add_errors(self, predicted: np.ndarray, actual: np.ndarray) -> None:
        keep = np.isfinite(actual) & (actual >= 1) & (actual <= 60)
        error = predicted[keep] - actual[keep]
        self._sq_error += float(np.sum(error**2))
        self._abs_error += float(np.sum(np.abs(error)))
        self.compared += int(keep.sum())


class PartStore:
    """A directory of parquet parts, local or on S3; each part written atomically."""

    def __init__(self, output: str):
        self.output = output.rstrip("/")
        parsed = urlparse(self.output)
        self.s3 = None
        if parsed.scheme == "s3":
            import boto3

            self.s3 = boto3.client("s3")
            self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        else:
            Path(self.output).mkdir(parents=True, exist_ok=True)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, name: str) -> pa.Table | None:
        if self.s3 is None:
            path = Path(self.output) / name
            return pq.read_table(path) if path.exists() else None
        from botocore.exceptions import ClientError

        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                return None
            raise
        return pq.read_table(io.BytesIO(body))

    def names(self) -> list[str]:
        if self.s3 is None:
            return sorted(p.name for p in Path(self.output).glob("part-*.parquet"))
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key("part-"))
        return sorted(o["Key"].rsplit("/", 1)[-1] for page in pages for o in page.get("Contents", []))

    def remove_from(self, first: int) -> int:
        """Delete parts numbered `first` and up; how many there were."""
        stale = [name for name in self.names() if name >= _part_name(first)]
        for name in stale:
            if self.s3 is None:
                (Path(self.output) / name).unlink()
            else:
                self.s3.delete_object(Bucket=self.bucket, Key=self._key(name))
        return len(stale)

    def write(self, name: str, table: pa.Table) -> None:
        if self.s3 is None:
            path = Path(self.output) / name
            tmp = path.with_suffix(".tmp")
            pq.write_table(table, tmp)
            tmp.replace(path)  # a part exists whole or not at all
            return
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self.s3.put_object(Bucket=self.bucket, Key=self._key(name), Body=buffer.getvalue())


class PredictionTable:
    """The database side: one row per (ride_id, model_version), upserted; and the rides that
    could not be scored, with their reason (so every ride ends in one known place)."""

    def __init__(self, url: str, table: str = TABLE, *, engine=None):
        import sqlalchemy as sa

        from rides.batch.database import create_engine, create_tables, insert_sql

        self.sa = sa
        self.engine = engine or create_engine(url)
        self.dialect = self.engine.dialect.name
        metadata = sa.MetaData()
        self.table = sa.Table(
            table,
            metadata,
            sa.Column("ride_id", sa.String(64), primary_key=True),
            sa.Column("model_version", sa.String(64), primary_key=True),
            sa.Column("model_name", sa.String(64), nullable=False),
            sa.Column("lpep_pickup_datetime", sa.DateTime),
            sa.Column("PULocationID", sa.Integer, nullable=False),
            sa.Column("DOLocationID", sa.Integer, nullable=False),
            sa.Column("trip_distance", sa.Float, nullable=False),
            sa.Column("passenger_count", sa.Float),
            sa.Column("predicted_duration", sa.Float, nullable=False),
            sa.Column("actual_duration", sa.Float),
        )
        self.rejected = sa.Table(
            f"{table}_skipped",
            metadata,
            sa.Column("ride_id", sa.String(64), primary_key=True),
            sa.Column("model_version", sa.String(64), primary_key=True),
            sa.Column("reason", sa.String(200), nullable=False),
        )
        create_tables(self.engine, metadata)
        self.upsert_sql = insert_sql(self.engine, self.table, ("ride_id", "model_version"), update=True)
        self.rejected_sql = insert_sql(self.engine, self.rejected, ("ride_id", "model_version"), update=True)

    def write(self, frame: pd.DataFrame, rejected: pd.DataFrame | None = None, *, connection=None) -> None:
        """Upsert a scored batch (and its skipped rides); in `connection`'s transaction if given."""
        from rides.batch.database import frame_rows

        if connection is None:
            with self.engine.begin() as own:
                return self.write(frame, rejected, connection=own)
        if len(frame):
            rows = frame_rows(frame, [c.name for c in self.table.columns], self.dialect)
            connection.exec_driver_sql(self.upsert_sql, rows)
        if rejected is not None and len(rejected):
            connection.exec_driver_sql(
                self.rejected_sql, frame_rows(rejected, ["ride_id", "model_version", "reason"], "")
            )
        return None

    def rows(self, limit: int = 10) -> list[dict]:
        with self.engine.connect() as connection:
            result = connection.execute(self.sa.select(self.table).order_by(self.table.c.ride_id).limit(limit))
            return [dict(row._mapping) for row in result]

    def count(self, model_version: str | None = None, *, skipped: bool = False) -> int:
        table = self.rejected if skipped else self.table
        query = self.sa.select(self.sa.func.count()).select_from(table)
        if model_version is not None:
            query = query.where(table.c.model_version == model_version)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one()


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def score_frame(
    frame: pd.DataFrame, model: LoadedModel, *, ride_ids: np.ndarray, month: Month | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One input batch → (predictions, the rides skipped with their first reason)."""
    frame = cast_columns(frame)
    ride_ids = np.asarray(ride_ids, dtype=object)
    bad = np.zeros(len(frame), dtype=bool)
    reasons = np.full(len(frame), None, dtype=object)
    for reason, mask in input_problems(frame, month).items():
        mask = mask.to_numpy() & ~bad  # each skipped row counts once, under its first reason
        reasons[mask] = reason
        bad |= mask
    good = usable(frame.loc[~bad])
    predicted = model.predict(features_from_frame(good))
    actual = good["duration"].to_numpy() if "duration" in good else np.full(len(good), np.nan)
    scored = pd.DataFrame(
        {
            "ride_id": ride_ids[~bad],
            "lpep_pickup_datetime": good["lpep_pickup_datetime"].to_numpy(),
            "PULocationID": good["PULocationID"].to_numpy(),
            "DOLocationID": good["DOLocationID"].to_numpy(),
            "trip_distance": good["trip_distance"].to_numpy(),
            "passenger_count": good["passenger_count"].to_numpy() if "passenger_count" in good else np.nan,
            "predicted_duration": predicted,
            "actual_duration": actual,
            "model_name": model.name,
            "model_version": model.version,
        }
    )
    rejected = pd.DataFrame({"ride_id": ride_ids[bad], "model_version": model.version, "reason": reasons[bad]})
    return scored, rejected


def count_reasons(rejected: pd.DataFrame, into: dict[str, int]) -> None:
    for reason, n in rejected["reason"].value_counts().items():
        into[reason] = into.get(reason, 0) + int(n)


def ride_ids(prefix: str, first_row: int, rows: int) -> np.ndarray:
    """Stable ride ids for rows of a TLC file: `<file name>:<row number>` (what `rides load` stores too)."""
    return np.char.add(f"{prefix}:", np.arange(first_row, first_row + rows).astype(str)).astype(object)


def fingerprint(path: Path, *, first_row: int, rows: int, batch_rows: int, model: LoadedModel) -> str:
    """What a part was computed from: a part is reused only when this matches exactly."""
    return json.dumps(
        {
            "source": path.name,
            "source_bytes": path.stat().st_size,
            "first_row": first_row,
            "rows": rows,
            "batch_rows": batch_rows,
            "model": model.name,
            "model_version": model.version,
        },
        sort_keys=True,
    )


def score(
    source: str,
    model: LoadedModel,
    *,
    output: str | None = None,
    database_url: str | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: bool = True,
) -> ScoreSummary:
    """Score a month (YYYY-MM), a local parquet file or an s3:// URI (the backfill path)."""
    from tqdm import tqdm

    started = time.perf_counter()
    path = local_path(source)
    month = month_of(source, path)
    prefix = re.sub(r"\.parquet$", "", path.name)
    output = output or str(state_dir() / "predictions" / prefix / f"model={model.version}")
    summary = ScoreSummary(source, output, model.version)
    parts = PartStore(output)
    table = PredictionTable(database_url or default_database_url()) if database_url != "" else None
    parquet = pq.ParquetFile(path)
    columns = [c for c in COLUMNS if c in parquet.schema_arrow.names]
    first_row = index = 0
    with tqdm(total=parquet.metadata.num_rows, unit="rows", desc=f"scoring {prefix}", disable=not progress) as bar:
        for index, batch in enumerate(parquet.iter_batches(batch_size=batch_rows, columns=columns)):
            name = _part_name(index)
            expected = fingerprint(path, first_row=first_row, rows=batch.num_rows, batch_rows=batch_rows, model=model)
            done = parts.read(name)
            metadata = (done.schema.metadata or {}) if done is not None else {}
            if done is not None and metadata.get(FINGERPRINT_KEY) == expected.encode():
                # written by an earlier run of the same job on the same rows with the same model
                scored = done.to_pandas()
                summary.parts_resumed += 1
                for reason, n in json.loads(metadata[SKIPPED_KEY]).items():
                    summary.skipped[reason] = summary.skipped.get(reason, 0) + n
                rejected = None
            else:
                if done is not None:
                    summary.parts_replaced += 1
                ids = ride_ids(prefix, first_row, batch.num_rows)
                scored, rejected = score_frame(batch.to_pandas(), model, ride_ids=ids, month=month)
                skipped: dict[str, int] = {}
                count_reasons(rejected, skipped)
                for reason, n in skipped.items():
                    summary.skipped[reason] = summary.skipped.get(reason, 0) + n
                part = pa.Table.from_pandas(scored, schema=OUTPUT_SCHEMA, preserve_index=False)
                # the part keeps its own skip counts, so a resumed run reports them too
                parts.write(
                    name, part.replace_schema_metadata({SKIPPED_KEY: json.dumps(skipped), FINGERPRINT_KEY: expected})
                )
                summary.parts_written += 1
            if table is not None:
                table.write(scored, rejected)  # idempotent upsert, so resumed parts are safe to write again
            summary.rows_in += batch.num_rows
            summary.scored += len(scored)
            summary.add_errors(scored["predicted_duration"].to_numpy(), scored["actual_duration"].to_numpy())
            first_row += batch.num_rows
            pa.default_memory_pool().release_unused()  # keep the peak flat across batches
            bar.update(batch.num_rows)
    # parts past the end belong to an earlier run with a smaller batch size: not this output
    summary.parts_removed = parts.remove_from(index + 1 if first_row else 0)
    summary.seconds = time.perf_counter() - started
    return summary


def month_range(first: str, last: str) -> list[str]:
    """'2023-01', '2023-03' → ['2023-01', '2023-02', '2023-03'] (for backfills)."""
    start, end = Month.parse(first), Month.parse(last)
    if (end.year, end.month) < (start.year, start.month):
        raise ValueError(f"{last} is before {first}")
    months, year, month = [], start.year, start.month
    while (year, month) <= (end.year, end.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months
