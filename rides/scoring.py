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
    """The environment's database (rides.database), else SQLite under the local state directory."""
    from rides.database import database_url

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
    """The database side: one row per (ride_id, model_version), upserted."""

    def __init__(self, url: str, table: str = TABLE):
        import sqlalchemy as sa

        self.sa = sa
        # Positional parameters (qmark for SQLite, format for psycopg): rows go as tuples.
        self.engine = sa.create_engine(url, **({"paramstyle": "format"} if url.startswith("postgresql") else {}))
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
        metadata.create_all(self.engine)
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise ValueError(f"database {dialect!r} is not supported (sqlite or postgresql)")
        self.dialect = dialect
        statement = insert(self.table)
        keys = ("ride_id", "model_version")
        upsert = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: statement.excluded[c.name] for c in self.table.columns if c.name not in keys},
        )
        # Compiled once to the driver's own SQL and parameter style (positional).
        compiled = upsert.compile(dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True})
        self.upsert_sql = str(compiled)
        if list(compiled.positiontup or ()) != [c.name for c in self.table.columns]:
            raise RuntimeError(f"unexpected parameter order for {dialect}: {compiled.positiontup}")

    def write(self, frame: pd.DataFrame) -> None:
        """Upsert a scored batch; tuples through the driver's executemany (SQLAlchemy's
        per-row dict handling would cost 3x the rest of the job)."""
        columns = [c.name for c in self.table.columns]
        values = []
        for name in columns:
            column = frame[name]
            if name == "lpep_pickup_datetime":
                # SQLAlchemy's own SQLite DateTime format, so reads through it still work
                text = (
                    column.dt.strftime("%Y-%m-%d %H:%M:%S.%f")
                    if self.dialect == "sqlite"
                    else column.dt.to_pydatetime()
                )
                values.append(np.where(column.isna(), None, np.asarray(text, dtype=object)))
            elif column.dtype.kind == "f":
                values.append(np.where(np.isnan(column.to_numpy()), None, column.to_numpy().astype(object)))
            else:
                values.append(column.to_numpy(dtype=object))
        rows = list(zip(*values, strict=True))
        with self.engine.begin() as connection:
            connection.exec_driver_sql(self.upsert_sql, rows)

    def rows(self, limit: int = 10) -> list[dict]:
        with self.engine.connect() as connection:
            result = connection.execute(self.sa.select(self.table).order_by(self.table.c.ride_id).limit(limit))
            return [dict(row._mapping) for row in result]

    def count(self, model_version: str | None = None) -> int:
        query = self.sa.select(self.sa.func.count()).select_from(self.table)
        if model_version is not None:
            query = query.where(self.table.c.model_version == model_version)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one()


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def score_frame(
    frame: pd.DataFrame,
    model: LoadedModel,
    *,
    first_row: int,
    prefix: str,
    month: Month | None,
    skipped: dict[str, int],
) -> pd.DataFrame:
    """One input batch → predictions (and the skipped rows counted by reason)."""
    frame = cast_columns(frame)
    bad = np.zeros(len(frame), dtype=bool)
    for reason, mask in input_problems(frame, month).items():
        mask = mask.to_numpy() & ~bad  # each skipped row counts once, under its first reason
        if mask.any():
            skipped[reason] = skipped.get(reason, 0) + int(mask.sum())
            bad |= mask
    ride_ids = np.char.add(f"{prefix}:", np.arange(first_row, first_row + len(frame)).astype(str))
    good = usable(frame.loc[~bad])
    predicted = model.predict(features_from_frame(good))
    actual = good["duration"].to_numpy() if "duration" in good else np.full(len(good), np.nan)
    return pd.DataFrame(
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


def score(
    source: str,
    model: LoadedModel,
    *,
    output: str | None = None,
    database_url: str | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: bool = True,
) -> ScoreSummary:
    """Score a month (YYYY-MM), a local parquet file or an s3:// URI."""
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
    first_row = 0
    with tqdm(total=parquet.metadata.num_rows, unit="rows", desc=f"scoring {prefix}", disable=not progress) as bar:
        for index, batch in enumerate(parquet.iter_batches(batch_size=batch_rows, columns=columns)):
            name = _part_name(index)
            done = parts.read(name)
            if done is not None:  # written by an earlier run of the same job
                scored = done.to_pandas()
                summary.parts_resumed += 1
                for reason, n in json.loads(done.schema.metadata[SKIPPED_KEY]).items():
                    summary.skipped[reason] = summary.skipped.get(reason, 0) + n
            else:
                skipped: dict[str, int] = {}
                scored = score_frame(
                    batch.to_pandas(), model, first_row=first_row, prefix=prefix, month=month, skipped=skipped
                )
                for reason, n in skipped.items():
                    summary.skipped[reason] = summary.skipped.get(reason, 0) + n
                part = pa.Table.from_pandas(scored, schema=OUTPUT_SCHEMA, preserve_index=False)
                # the part keeps its own skip counts, so a resumed run reports them too
                parts.write(name, part.replace_schema_metadata({SKIPPED_KEY: json.dumps(skipped)}))
                summary.parts_written += 1
            if table is not None:
                table.write(scored)  # idempotent upsert, so resumed parts are safe to write again
            summary.rows_in += batch.num_rows
            summary.scored += len(scored)
            summary.add_errors(scored["predicted_duration"].to_numpy(), scored["actual_duration"].to_numpy())
            first_row += batch.num_rows
            pa.default_memory_pool().release_unused()  # keep the peak flat across batches
            bar.update(batch.num_rows)
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
