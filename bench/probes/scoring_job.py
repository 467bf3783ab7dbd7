"""Batch scoring of one month on one core: rows/s to parquet alone and with SQLite upserts,
from the SQLite rides table (`rides score --from-db`: read → predict → upsert → watermark, one
transaction per batch) and the load into it (best of three), against the row-by-row pattern
(one predict call per ride).

    python -m bench.probes.scoring_job MODEL_DIR MONTH      (prints one JSON object)
"""

import json
import os
import shutil
import sys
import tempfile
import time


def main(model_dir: str, month: str) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the goal says
    from rides.batch.scoring import score
    from rides.data import read_trips
    from rides.stream.features import features_from_frame
    from rides.stream.model import load_model

    model = load_model(model_dir, version="1")
    out: dict = {}
    for label, database in (("parquet", ""), ("parquet_sqlite", "sqlite")):
        best = 0.0
        for _ in range(3):
            tmp = tempfile.mkdtemp()
            url = f"sqlite:///{tmp}/p.db" if database else ""
            summary = score(month, model, output=f"{tmp}/out", database_url=url, progress=False)
            best = max(best, summary.rows_per_s)
            shutil.rmtree(tmp)
        out[label] = best
    out["rows"] = summary.rows_in
    from rides.batch.incremental import score_new_rides
    from rides.batch.ride_source import load_rides

    tmp = tempfile.mkdtemp()
    url = f"sqlite:///{tmp}/rides.db"
    loaded = load_rides(url, month)
    out["db_load"] = loaded.rows / loaded.seconds
    best = 0.0
    for run in range(3):
        incremental = score_new_rides(url, model, job=f"bench-{run}")  # each job starts at watermark 0
        assert incremental.rows_in == loaded.rows
        best = max(best, incremental.rows_per_s)
    out["from_db_sqlite"] = best
    shutil.rmtree(tmp)
    frame = read_trips(month).head(2000)
    started = time.perf_counter()
    for i in range(len(frame)):
        model.predict(features_from_frame(frame.iloc[i : i + 1]))
    out["row_by_row"] = len(frame) / (time.perf_counter() - started)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
