"""Peak memory of scoring a month written `copies` times over into one file, above the
process's baseline: streaming in record batches should keep one copy and eight close.

    python -m bench.probes.scoring_memory MODEL_DIR MONTH COPIES      (prints: rows MB)
"""

import gc
import sys
import tempfile


def status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def main(model_dir: str, month: str, copies: int) -> None:
    import pyarrow.parquet as pq

    from rides.batch.scoring import score
    from rides.data import month_path
    from rides.stream.model import load_model

    tmp = tempfile.mkdtemp()
    table = pq.read_table(month_path(month))
    path = f"{tmp}/green_tripdata_{month}.parquet"
    with pq.ParquetWriter(path, table.schema) as writer:
        for _ in range(copies):
            writer.write_table(table, row_group_size=65536)
    del table
    gc.collect()
    base = status_kb("VmRSS")
    summary = score(path, load_model(model_dir, version="1"), output=f"{tmp}/out", database_url="", progress=False)
    print(summary.rows_in, (status_kb("VmHWM") - base) // 1024)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
