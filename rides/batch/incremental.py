"""`rides score --from-db`: score the rides that arrived since the last run.

The job keeps a high-water mark (the last rides.id it covered) in the predictions database.
Each batch is one transaction that locks the watermark row, reads the next rides after it,
upserts their predictions (and the skipped ones, with their reason) and moves the watermark to
the last ride read. So:
- a run killed at any point leaves the watermark and the predictions of the same batches
  (everything before it committed, nothing after), and the next run starts right after;
- two runs at the same time queue on the watermark row (`SELECT … FOR UPDATE`; SQLite's write
  lock) and take turns batch by batch: no ride is scored twice;
- rides inserted during a run are read by that run if they arrive before its last batch, else
  by the next run (see rides.batch.ride_source for why ids never appear below the watermark).
The watermark belongs to a job (default: the model's name), not to a model version: a
promotion carries on from where the previous version stopped. A new job name rescored from 0.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rides.batch.ride_source import RidesTable
from rides.batch.scoring import PredictionTable, ScoreSummary, count_reasons, score_frame
from rides.stream.model import LoadedModel

WATERMARKS = "scoring_watermarks"
BATCH_ROWS = 50_000


@dataclass
class IncrementalSummary(ScoreSummary):
    job: str = ""
    batches: int = 0
    watermark_before: int = 0
    watermark: int = 0
    waited_for_lock: float = 0.0
    batch_ids: list[tuple[int, int]] = field(default_factory=list)


class Watermarks:
    def __init__(self, engine):
        import sqlalchemy as sa

        from rides.batch.database import create_tables, placeholder

        self.engine = engine
        metadata = sa.MetaData()
        self.table = sa.Table(
            WATERMARKS,
            metadata,
            sa.Column("job", sa.String(100), primary_key=True),
            sa.Column("last_id", sa.BigInteger, nullable=False),
            sa.Column("model_version", sa.String(64)),
            sa.Column("updated_at", sa.Float),
        )
        create_tables(engine, metadata)
        mark = placeholder(engine)
        lock = " FOR UPDATE" if engine.dialect.name == "postgresql" else ""  # SQLite: BEGIN IMMEDIATE
        self.read_sql = f"SELECT last_id FROM {WATERMARKS} WHERE job = {mark}{lock}"
        self.move_sql = (
            f"UPDATE {WATERMARKS} SET last_id = {mark}, model_version = {mark}, updated_at = {mark} WHERE job = {mark}"
        )
        from rides.batch.database import insert_sql

        self.create_sql = insert_sql(engine, self.table, ("job",), update=False)

    def ensure(self, job: str) -> None:
        with self.engine.begin() as connection:
            connection.exec_driver_sql(self.create_sql, [(job, 0, None, time.time())])

    def lock(self, connection, job: str) -> int:
        """The job's watermark, locked until `connection`'s transaction ends."""
        return connection.exec_driver_sql(self.read_sql, (job,)).scalar_one()

    def move(self, connection, job: str, last_id: int, model_version: str) -> None:
        connection.exec_driver_sql(self.move_sql, (last_id, model_version, time.time(), job))

    def get(self, job: str) -> int | None:
        import sqlalchemy as sa

        with self.engine.connect() as connection:
            return connection.execute(sa.select(self.table.c.last_id).where(self.table.c.job == job)).scalar()


def score_new_rides(
    database_url: str,
    model: LoadedModel,
    *,
    source_url: str | None = None,
    job: str | None = None,
    batch_rows: int = BATCH_ROWS,
    max_batches: int | None = None,
    keep_going: Callable[[], bool] | None = None,
    after_batch: Callable[[IncrementalSummary], None] | None = None,
) -> IncrementalSummary:
    """Score every ride after the job's watermark, batch by batch, until none is left.

    `source_url`: where the rides table is (default: the predictions database itself);
    `keep_going`: asked before each batch (a Lambda's remaining time), stops the run when False."""
    from rides.batch.database import create_engine

    started = time.perf_counter()
    engine = create_engine(database_url)
    predictions = PredictionTable(database_url, engine=engine)
    watermarks = Watermarks(engine)
    same_database = source_url in (None, database_url)
    rides = RidesTable(database_url, engine=engine) if same_database else RidesTable(source_url)
    job = job or model.name
    watermarks.ensure(job)
    summary = IncrementalSummary(
        source=_without_password(source_url or database_url),
        output=_without_password(database_url),
        model_version=model.version,
        job=job,
    )
    summary.watermark_before = summary.watermark = watermarks.get(job) or 0
    while (max_batches is None or summary.batches < max_batches) and (keep_going is None or keep_going()):
        with engine.begin() as connection:
            asked = time.perf_counter()
            last_id = watermarks.lock(connection, job)
            summary.waited_for_lock += time.perf_counter() - asked
            if same_database:
                frame = rides.after(connection, last_id, batch_rows)
            else:
                with rides.engine.connect() as source:
                    frame = rides.after(source, last_id, batch_rows)
            if frame.empty:
                summary.watermark = last_id
                break
            scored, rejected = score_frame(frame, model, ride_ids=frame["ride_id"].to_numpy(), month=None)
            predictions.write(scored, rejected, connection=connection)
            newest = int(frame["id"].iloc[-1])
            watermarks.move(connection, job, newest, model.version)
        # committed: only now count the batch as done
        summary.batches += 1
        summary.batch_ids.append((int(frame["id"].iloc[0]), newest))
        summary.watermark = newest
        summary.rows_in += len(frame)
        summary.scored += len(scored)
        count_reasons(rejected, summary.skipped)
        summary.add_errors(scored["predicted_duration"].to_numpy(), scored["actual_duration"].to_numpy())
        if after_batch is not None:
            after_batch(summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def parse_period(text: str) -> float:
    """'90s', '10m', '1h' → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh])\s*", text)
    if not match:
        raise ValueError(f"a period looks like 30s, 10m or 1h, got {text!r}")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def run_every(period: float, run: Callable[[], object], *, runs: int | None = None, sleep=time.sleep) -> int:
    """Call `run` every `period` seconds (measured from each start) until interrupted, or `runs` times."""
    done = 0
    while runs is None or done < runs:
        started = time.monotonic()
        run()
        done += 1
        if runs is not None and done >= runs:
            break
        sleep(max(0.0, period - (time.monotonic() - started)))
    return done
