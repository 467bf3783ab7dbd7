"""The archive: predictions, decisions and completions kept beyond the streams' retention, as
parquet partitioned by arrival hour in the model bucket:

    s3://<model bucket>/archive/<stream>/dt=YYYY-MM-DD/hour=HH/<file>.parquet

On AWS, Kinesis Data Firehose writes it (infra/modules/stream_archive: one delivery stream per
stream, JSON converted to parquet with the Glue table whose columns are COLUMNS below, the
partition from the record's arrival time). Locally `rides archive` reads the streams and writes
the same layout and columns, so `rides evaluate --archive` and any reader work on both.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from rides.stream.kpl import expand
from rides.stream.model_specs import MODELS

# The columns per archived stream, as Glue types (Terraform's tables use these, tests/test_infra.py checks).
COLUMNS = {
    "predictions": [
        ("model", "string"),
        ("version", "string"),
        ("role", "string"),
        ("prediction", "struct<ride_id:string," + ",".join(f"{m.prediction_field}:double" for m in MODELS) + ">"),
        (
            "source",
            "struct<shard_id:string,sequence_number:string,approximate_arrival_timestamp:double,"
            "sub_sequence_number:int>",
        ),
    ],
    "decisions": [
        ("decision_id", "string"),
        ("ride_id", "string"),
        ("decision", "string"),
        ("flags", "array<string>"),
        ("complete", "boolean"),
        ("reason", "string"),
        ("decided_at", "double"),
    ],
    "completions": [
        ("type", "string"),
        ("version", "int"),
        ("ride_id", "string"),
        ("lpep_dropoff_datetime", "string"),
        *((m.outcome_field, "double") for m in MODELS),
    ],
}
_ARROW = {"string": pa.string(), "double": pa.float64(), "int": pa.int32(), "boolean": pa.bool_()}


def arrow_type(glue: str) -> pa.DataType:
    if glue in _ARROW:
        return _ARROW[glue]
    if glue.startswith("array<"):
        return pa.list_(arrow_type(glue[6:-1]))
    if glue.startswith("struct<"):
        fields = [part.split(":", 1) for part in glue[7:-1].split(",")]
        return pa.struct([(name, arrow_type(kind)) for name, kind in fields])
    raise ValueError(f"no arrow type for {glue}")


def schema(kind: str) -> pa.Schema:
    return pa.schema([(name, arrow_type(kind_)) for name, kind_ in COLUMNS[kind]])


def _value(value, kind: pa.DataType):
    """A JSON value as the column's type (what Firehose's OpenX JSON deserializer does)."""
    if value is None:
        return None
    if pa.types.is_struct(kind):
        return {f.name: _value(value.get(f.name), f.type) for f in kind} if isinstance(value, dict) else None
    if pa.types.is_list(kind):
        return [_value(v, kind.value_type) for v in value] if isinstance(value, list) else None
    if pa.types.is_string(kind):
        if isinstance(value, str):
            return value
        return orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
    if pa.types.is_floating(kind):
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if pa.types.is_integer(kind):
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else None
    if pa.types.is_boolean(kind):
        return value if isinstance(value, bool) else None
    return value


def rows_to_table(kind: str, bodies: list[dict]) -> pa.Table:
    target = schema(kind)
    columns = {f.name: [_value(body.get(f.name), f.type) for body in bodies] for f in target}
    return pa.table(columns, schema=target)


def partition(arrival: datetime) -> str:
    moment = arrival.astimezone(UTC)
    return f"dt={moment:%Y-%m-%d}/hour={moment:%H}"


def write_archive(s3, bucket: str, stream: str, kind: str, records: list[dict], prefix: str = "archive") -> list[str]:
    """Records (GetRecords' shape) → one parquet object per arrival hour. → the keys written.
    A record that is not JSON is left out (it is a dead letter on its way already)."""
    by_hour: dict[str, list[dict]] = {}
    names: dict[str, tuple[str, str]] = {}
    for record in expand(records):  # Firehose deaggregates KPL records too
        try:
            body = orjson.loads(record["Data"])
        except orjson.JSONDecodeError:
            continue
        if not isinstance(body, dict):
            continue
        hour = partition(record["ApproximateArrivalTimestamp"])
        by_hour.setdefault(hour, []).append(body)
        first, _ = names.get(hour, (record["SequenceNumber"], ""))
        names[hour] = (first, record["SequenceNumber"])
    keys = []
    for hour, bodies in by_hour.items():
        buffer = io.BytesIO()
        pq.write_table(rows_to_table(kind, bodies), buffer)
        first, last = names[hour]
        key = f"{prefix}/{stream}/{hour}/{stream}-{first[-12:]}-{last[-12:]}.parquet"
        s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
        keys.append(key)
    return keys


def read_archive(s3, bucket: str, stream: str, prefix: str = "archive") -> pa.Table | None:
    """Every part of a stream's archive as one table (None when there is none)."""
    tables = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{stream}/"):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".parquet"):
                tables.append(pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())))
    return pa.concat_tables(tables) if tables else None


def evaluate_archive(s3, bucket: str, predictions_stream: str, completions_stream: str, prefix: str = "archive"):
    """Live evaluation's figures recomputed from the archive (any look-back the bucket holds):
    each (model, version, role)'s distinct ride predictions joined with the rides' outcomes.
    → {(model, version, role): [Evaluated]}."""
    from rides.stream.evaluation.sums import Evaluated, hour_of
    from rides.stream.events import OUTCOME_FIELDS

    predictions = read_archive(s3, bucket, predictions_stream, prefix)
    completions = read_archive(s3, bucket, completions_stream, prefix)
    if predictions is None or completions is None:
        return {}
    outcomes: dict[str, tuple[dict, str]] = {}
    for row in completions.to_pylist():
        dropoff = datetime.fromisoformat(row["lpep_dropoff_datetime"]).replace(tzinfo=UTC).timestamp()
        values = {field: row.get(name) for field, name in OUTCOME_FIELDS.items() if row.get(name) is not None}
        outcomes[str(row["ride_id"])] = (values, hour_of(dropoff))
    out: dict[tuple[str, str, str], dict[str, Evaluated]] = {}
    for row in predictions.to_pylist():
        prediction = row["prediction"] or {}
        ride_id = str(prediction.get("ride_id"))
        role = row.get("role") or "production"
        for field in OUTCOME_FIELDS:
            value = prediction.get(field)
            if value is None or ride_id not in outcomes or field not in outcomes[ride_id][0]:
                continue
            actual, hour = outcomes[ride_id][0][field], outcomes[ride_id][1]
            key = (row["model"], row["version"], role)
            # a repeated record (at-least-once delivery) is the same pair: counted once
            out.setdefault(key, {})[ride_id] = Evaluated(ride_id, *key, field, value, actual, hour)
    return {key: list(rows.values()) for key, rows in out.items()}
