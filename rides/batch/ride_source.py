"""The rides table: where the batch job's new rides come from (SQLite locally, PostgreSQL on AWS).

Each row has `id`, an increasing number the scoring job's watermark follows, and `ride_id`,
stable across loads (`<TLC file name>:<row number>`, the same id the parquet path gives a row).
Writers take a table lock that serializes them (PostgreSQL: SHARE ROW EXCLUSIVE, which plain
reads do not wait for; SQLite serializes writers anyway), so ids become visible in the order
they were allocated: a reader that has seen id N will never later see a new row below N. Without
it, a transaction that took ids 100-199 and committed after another that took 200-299 would
slip under a watermark already at 299. Producers that insert rides themselves use
`RidesTable.insert`, or take the same lock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pandas as pd
import pyarrow.parquet as pq

from rides.data import COLUMNS, local_path

TABLE = "rides"
BATCH_ROWS = 50_000
# the rides table's ride columns, in the order rows are read and written
RIDE_COLUMNS = ["ride_id", *COLUMNS]


@dataclass
class LoadSummary:
    source: str
    rows: int = 0
    inserted: int = 0
    seconds: float = 0.0

    @property
    def already_there(self) -> int:
        return self.rows - self.inserted


class RidesTable:
    def __init__(self, url: str, *, engine=None):
        import sqlalchemy as sa

        from rides.batch.database import create_engine, create_tables, insert_sql, placeholder

        self.sa = sa
        self.engine = engine or create_engine(url)
        self.dialect = self.engine.dialect.name
        metadata = sa.MetaData()
        self.table = sa.Table(
            TABLE,
            metadata,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
            sa.Column("ride_id", sa.String(64), nullable=False, unique=True),
            # as the TLC files hold them: a bad value is the scorer's to report, not the loader's
            sa.Column("lpep_pickup_datetime", sa.DateTime),
            sa.Column("lpep_dropoff_datetime", sa.DateTime),
            sa.Column("PULocationID", sa.Float),
            sa.Column("DOLocationID", sa.Float),
            sa.Column("trip_distance", sa.Float),
            sa.Column("passenger_count", sa.Float),
            sa.Column("payment_type", sa.Float),  # added later: create_tables adds it to older tables
            sa.Column("fare_amount", sa.Float),
            sa.Column("tip_amount", sa.Float),
        )
        create_tables(self.engine, metadata)
        self.insert_sql = insert_sql(self.engine, self.table, ("ride_id",), update=False, columns=RIDE_COLUMNS)
        quoted = ", ".join(f'"{c}"' for c in ["id", *RIDE_COLUMNS])
        mark = placeholder(self.engine)
        self.after_sql = f"SELECT {quoted} FROM {TABLE} WHERE id > {mark} ORDER BY id LIMIT {mark}"

    def insert(self, frame: pd.DataFrame) -> int:
        """Insert rides (a frame with RIDE_COLUMNS); ride ids already there are left as they are.
        Returns how many were new."""
        from rides.batch.database import frame_rows

        for column in COLUMNS:
            if column not in frame:
                frame = frame.assign(**{column: float("nan")})
        rows = frame_rows(frame, RIDE_COLUMNS, self.dialect)
        with self.engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.exec_driver_sql(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
            before = self._max_id(connection)
            connection.exec_driver_sql(self.insert_sql, rows)
            # rowcount after executemany is not reliable across drivers: count what is new
            return connection.execute(
                self.sa.select(self.sa.func.count()).select_from(self.table).where(self.table.c.id > before)
            ).scalar_one()

    def _max_id(self, connection) -> int:
        return connection.execute(
            self.sa.select(self.sa.func.coalesce(self.sa.func.max(self.table.c.id), 0))
        ).scalar_one()

    def after(self, connection, last_id: int, limit: int) -> pd.DataFrame:
        """Up to `limit` rides with id > last_id, in id order (columns id + RIDE_COLUMNS)."""
        rows = connection.exec_driver_sql(self.after_sql, (last_id, limit)).fetchall()
        return pd.DataFrame.from_records(rows, columns=["id", *RIDE_COLUMNS], coerce_float=True)

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(self.sa.select(self.sa.func.count()).select_from(self.table)).scalar_one()

    def max_id(self) -> int:
        with self.engine.connect() as connection:
            return self._max_id(connection)


def load_rides(
    url: str, source: str, *, limit: int | None = None, skip: int = 0, batch_rows: int = BATCH_ROWS
) -> LoadSummary:
    """Insert the rows of a TLC month (YYYY-MM, a parquet file or s3://) into the rides table:
    rows `skip` to `skip + limit`. Loading the same rows again inserts nothing."""
    from rides.batch.scoring import ride_ids

    started = time.perf_counter()
    path = local_path(source)
    prefix = re.sub(r"\.parquet$", "", path.name)
    table = RidesTable(url)
    summary = LoadSummary(source)
    parquet = pq.ParquetFile(path)
    columns = [c for c in COLUMNS if c in parquet.schema_arrow.names]
    first_row = 0
    end = skip + limit if limit is not None else parquet.metadata.num_rows
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
        frame = batch.to_pandas()
        lo, hi = max(skip - first_row, 0), min(end - first_row, len(frame))
        if lo < hi:
            part = frame.iloc[lo:hi].copy()
            part.insert(0, "ride_id", ride_ids(prefix, first_row + lo, hi - lo))
            for column in ("lpep_pickup_datetime", "lpep_dropoff_datetime"):
                part[column] = pd.to_datetime(part[column])
            summary.inserted += table.insert(part.astype({c: "float64" for c in columns if "datetime" not in c}))
            summary.rows += hi - lo
        first_row += len(frame)
        if first_row >= end:
            break
    summary.seconds = time.perf_counter() - started
    return summary
