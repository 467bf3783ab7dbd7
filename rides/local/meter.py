"""What the local stack's AWS calls would bill on AWS, counted request by request.

The emulator (rides.local.emulator) hands every request to `Meter.record_*` with the function
that made it: each handler's clients name their function in the User-Agent
(`rides-function/<name>`, rides.stream.aws), so a call is counted against the function that
made it, as CloudTrail would attribute it. The units are the ones AWS bills:

- DynamoDB on demand: write request units by the item's size, 1 KB each (the larger of the
  item before and after; a failed conditional write is charged the same; each global secondary
  index the write touches is charged again, twice when the index key moves), read request units
  by 4 KB (half for an eventually consistent read; a Query by the sum of what it read).
  Item sizes follow DynamoDB's rules (`item_size`).
- Kinesis: PUT payload units, one per 25 KB of each record (data + partition key).
- Firehose: ingestion billed per record rounded up to 5 KB (`firehose_billed_bytes`).
- Lambda: requests, and GB-seconds from each invocation's measured time and the memory its
  Terraform module configures (the runner reports them: `record_invocation`).
- SQS: requests, one per 64 KB of payload.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

KB = 1024
AGENT_TAG = "rides-function/"
UNKNOWN = "(no function)"


# -- DynamoDB's item sizes (Developer Guide, "Item sizes and formats") --------------------------
def _number_size(text: str) -> int:
    """1 byte per two significant digits, plus 1; leading and trailing zeroes do not count."""
    digits = Decimal(text).normalize().as_tuple().digits if text.strip() not in ("0", "-0") else (0,)
    significant = len(digits) if any(digits) else 1
    return (significant + 1) // 2 + 1


def value_size(value: dict) -> int:
    """The size of one attribute value in DynamoDB's JSON (`{"S": ...}`, `{"N": ...}`, ...)."""
    ((kind, body),) = value.items()
    if kind == "S":
        return len(body.encode())
    if kind == "N":
        return _number_size(body)
    if kind == "B":
        return len(body) if isinstance(body, bytes | bytearray) else len(body) * 3 // 4
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(v.encode()) for v in body)
    if kind == "NS":
        return sum(_number_size(v) for v in body)
    if kind == "BS":
        return sum(value_size({"B": v}) for v in body)
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in body)
    if kind == "M":
        return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in body.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def item_size(item: dict | None) -> int:
    """An item's size: the sum of its attribute names' and values' sizes."""
    return sum(len(name.encode()) + value_size(value) for name, value in (item or {}).items())


def write_units(size: int) -> int:
    return max(1, math.ceil(size / KB))


def read_units(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / (4 * KB)))
    return float(units) if consistent else units / 2


@dataclass(frozen=True)
class Index:
    name: str
    keys: tuple[str, ...]  # hash and range key attributes
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    include: tuple[str, ...] = ()


def _projected(index: Index, table_keys: tuple[str, ...], item: dict | None) -> dict | None:
    """What of an item an index holds; None when the item is not in it (lacks a key of it)."""
    if not item or not all(k in item for k in index.keys):
        return None
    if index.projection == "ALL":
        return item
    keep = set(index.keys) | set(table_keys) | set(index.include if index.projection == "INCLUDE" else ())
    return {k: v for k, v in item.items() if k in keep}


def index_writes(indexes: list[Index], table_keys: tuple[str, ...], old: dict | None, new: dict | None) -> int:
    """Write request units a write costs in the table's global secondary indexes: an item is in
    an index when it has every key attribute of it; moving its index key is a delete and a put."""
    total = 0
    for index in indexes:
        before, after = _projected(index, table_keys, old), _projected(index, table_keys, new)
        if before is None and after is None:
            continue
        if before is None or after is None:  # enters or leaves the index
            total += write_units(item_size(before or after))
        elif any(before[k] != after[k] for k in index.keys):  # its index key moves: delete, put
            total += write_units(item_size(before)) + write_units(item_size(after))
        elif before != after:  # a projected attribute changed
            total += write_units(max(item_size(before), item_size(after)))
    return total


# -- the tally ----------------------------------------------------------------------------------
@dataclass
class Usage:
    requests: int = 0
    write_units: float = 0.0  # DynamoDB WRU (table and indexes)
    read_units: float = 0.0  # DynamoDB RRU
    put_payload_units: int = 0  # Kinesis
    records: int = 0  # Kinesis records put
    ingest_kb: int = 0  # Kinesis on-demand data in: each record rounded up to 1 KB
    firehose_bytes: int = 0  # what Firehose would bill for these records (per record, 5 KB steps)
    gb_seconds: float = 0.0  # Lambda
    invocations: int = 0
    sqs_requests: int = 0

    def add(self, other: Usage) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Meter:
    usage: dict[tuple[str, str, str], Usage] = field(default_factory=lambda: defaultdict(Usage))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, function: str, service: str, operation: str, **units) -> None:
        with self.lock:
            usage = self.usage[(function or UNKNOWN, service, operation)]
            usage.requests += 1
            for name, value in units.items():
                setattr(usage, name, getattr(usage, name) + value)

    def record_invocation(self, function: str, seconds: float, memory_mb: int) -> None:
        with self.lock:
            usage = self.usage[(function, "lambda", "Invoke")]
            usage.invocations += 1
            usage.gb_seconds += seconds * memory_mb / 1024

    def snapshot(self) -> list[dict]:
        with self.lock:
            return [
                {"function": f, "service": s, "operation": o, **vars(u)} for (f, s, o), u in sorted(self.usage.items())
            ]

    def clear(self) -> None:
        with self.lock:
            self.usage.clear()


def function_of(user_agent: str) -> str:
    """The function a request came from, as its client named it in the User-Agent."""
    for part in user_agent.split():
        if part.startswith(AGENT_TAG):
            return part[len(AGENT_TAG) :]
    return UNKNOWN


def put_payload_units(size: int) -> int:
    return max(1, math.ceil(size / (25 * KB)))


def on_demand_kb(size: int) -> int:
    """Kinesis on-demand bills data in per record, rounded up to the next KB."""
    return max(1, math.ceil(size / KB))


def firehose_billed_bytes(size: int) -> int:
    """Firehose bills ingestion per record, rounded up to the next 5 KB."""
    return max(1, math.ceil(size / (5 * KB))) * 5 * KB


def sqs_requests(payload: int) -> int:
    return max(1, math.ceil(payload / (64 * KB)))


# -- DynamoDB, request by request ------------------------------------------------------------------
class DynamoTables:
    """The emulator's view of a moto DynamoDB backend: each table's keys and indexes, and an
    item as it is stored (DynamoDB JSON)."""

    def __init__(self, backend):
        self.backend = backend

    def _table(self, name: str):
        try:
            return self.backend.get_table(name)
        except Exception:
            return None

    def exists(self, name: str) -> bool:
        return self._table(name) is not None

    def keys(self, name: str) -> tuple[str, ...]:
        table = self._table(name)
        return tuple(k for k in (table.hash_key_attr, table.range_key_attr) if k) if table else ()

    def indexes(self, name: str) -> list[Index]:
        table = self._table(name)
        out = []
        for index in (table.global_indexes or []) if table else []:
            projection = index.projection or {}
            out.append(
                Index(
                    index.name,
                    tuple(index.schema_key_attrs),
                    projection.get("ProjectionType", "ALL"),
                    tuple(projection.get("NonKeyAttributes", [])),
                )
            )
        return out

    def item(self, name: str, key: dict) -> dict | None:
        table = self._table(name)
        if table is None:
            return None
        try:
            found = self.backend.get_item(name, key)
        except Exception:
            return None
        return found.to_json()["Attributes"] if found is not None else None


def tables_named(request: dict) -> str:
    """The table(s) a DynamoDB request names, for the meter's rows."""
    if request.get("TableName"):
        return request["TableName"]
    names = set(request.get("RequestItems") or {})
    names |= {op.get("TableName", "") for action in request.get("TransactItems") or [] for op in action.values()}
    return ",".join(sorted(names - {""}))


def dynamodb_before(tables: DynamoTables, operation: str, request: dict) -> dict:
    """What a write will replace: table → [(key, old item)], read before the request runs."""
    out: dict[str, list] = {}
    if operation in ("PutItem", "UpdateItem", "DeleteItem"):
        name = request.get("TableName", "")
        key = request.get("Key") or {k: request.get("Item", {}).get(k) for k in tables.keys(name)}
        out[name] = [(key, tables.item(name, key))]
    elif operation == "BatchWriteItem":
        for name, writes in (request.get("RequestItems") or {}).items():
            for write in writes:
                put, delete = write.get("PutRequest"), write.get("DeleteRequest")
                key = (delete or {}).get("Key") or {k: (put or {}).get("Item", {}).get(k) for k in tables.keys(name)}
                out.setdefault(name, []).append((key, tables.item(name, key)))
    elif operation == "TransactWriteItems":
        for action in request.get("TransactItems") or []:
            (op,) = action.values()
            name = op.get("TableName", "")
            key = op.get("Key") or {k: op.get("Item", {}).get(k) for k in tables.keys(name)}
            out.setdefault(name, []).append((key, tables.item(name, key), op.get("Item")))
    return out


def dynamodb_units(tables: DynamoTables, operation: str, request: dict, before: dict, response: dict) -> dict:
    """The request units one DynamoDB call costs: {"write_units": ..., "read_units": ...}."""
    write = read = 0.0
    if operation == "TransactWriteItems":
        # Two write units per KB of each item (ConditionCheck too); a cancelled one is billed too.
        for name, entries in before.items():
            table_keys, indexes = tables.keys(name), tables.indexes(name)
            for key, old, put in entries:
                new = tables.item(name, key) if "__type" not in response else (put or old)
                write += 2 * write_units(max(item_size(old), item_size(new)))
                write += index_writes(indexes, table_keys, old, new)
    elif operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"):
        for name, pairs in before.items():
            table_keys, indexes = tables.keys(name), tables.indexes(name)
            for key, old in pairs:
                new = tables.item(name, key)
                if operation == "PutItem" and new is None:  # a refused conditional put: what it would be
                    new = request.get("Item")
                write += write_units(max(item_size(old), item_size(new)))
                write += index_writes(indexes, table_keys, old, new)
    elif operation == "GetItem":
        read += read_units(item_size(response.get("Item")), bool(request.get("ConsistentRead")))
    elif operation == "BatchGetItem":
        asked = request.get("RequestItems") or {}
        for name, items in (response.get("Responses") or {}).items():
            consistent = bool(asked.get(name, {}).get("ConsistentRead"))
            read += sum(read_units(item_size(item), consistent) for item in items)
            missing = len(asked.get(name, {}).get("Keys", [])) - len(items)
            read += max(0, missing) * read_units(0, consistent)  # a key not found costs the minimum
    elif operation in ("Query", "Scan"):
        size = sum(item_size(item) for item in response.get("Items") or [])
        read += read_units(size, bool(request.get("ConsistentRead")))
    return {"write_units": write, "read_units": read}
