"""The evaluation consumer's completions/s, and what a shadow model costs per ride as its own
function (the whole fast path again) against a second model in the production consumer
(prediction and encoding only).

    python -m bench.probes.evaluation MODEL_DIR MONTH      (prints one JSON object)

The evaluation runs against an in-memory stand-in for DynamoDB that answers at once: what is
measured is our code per completion (decode, parse, join with the ride's item, sums), not a network.
"""

import base64
import json
import os
import sys
import time


class InstantTable:
    """What the evaluation calls, over a dict, answering at once: the rides' items
    (batch_get_item), the shard's mark (get_item), the sums (transact_write_items, ADD)."""

    def __init__(self, rides: dict[str, dict]):
        self.rides = rides  # ride id → the decision item (DynamoDB JSON)
        self.items: dict[tuple[str, str], dict] = {}

    def batch_get_item(self, RequestItems):
        [(table, request)] = RequestItems.items()
        found = [self.rides[k["ride_id"]["S"]] for k in request["Keys"] if k["ride_id"]["S"] in self.rides]
        return {"Responses": {table: found}}

    def get_item(self, Key, **_):
        item = self.items.get((Key["pk"]["S"], Key["sk"]["S"]))
        return {"Item": item} if item else {}

    def transact_write_items(self, TransactItems):
        for action in TransactItems:
            kind, op = next(iter(action.items()))
            if kind == "Put":
                self.items[(op["Item"]["pk"]["S"], op["Item"]["sk"]["S"])] = op["Item"]
            elif kind == "Update":
                item = self.items.setdefault((op["Key"]["pk"]["S"], op["Key"]["sk"]["S"]), dict(op["Key"]))
                for name, value in op["ExpressionAttributeValues"].items():
                    if name != ":ttl":
                        before = float(item.get(name[1:], {"N": "0"})["N"])
                        item[name[1:]] = {"N": repr(before + float(value["N"]))}
        return {}

    def query(self, **_):
        return {"Items": []}


def records_of(payloads, start: int = 1):
    return [
        {
            "eventID": f"shardId-000000000000:{i}",
            "kinesis": {
                "data": base64.b64encode(p if isinstance(p, bytes) else json.dumps(p).encode()).decode(),
                "sequenceNumber": f"{i:056d}",
                "partitionKey": "1",
                "approximateArrivalTimestamp": 1_700_000_000.0,
            },
        }
        for i, p in enumerate(payloads, start)
    ]


def main(model_dir: str, month: str) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from rides.data import read_trips
    from rides.local.producer import completion_events, ride_events
    from rides.stream.consumer import ConsumerConfig, _features, _predict
    from rides.stream.deadletter import DeadLetterSink
    from rides.stream.decision import DecisionConfig
    from rides.stream.decision.service import merged
    from rides.stream.evaluation.service import EvaluationConfig, process_records
    from rides.stream.evaluation.store import EvaluationStore
    from rides.stream.events import prediction_from, read_ride
    from rides.stream.kinesis_batch import KinesisBatch
    from rides.stream.model import load_model

    frame = read_trips(month).head(5000)
    model = load_model(model_dir, version="1")
    rides = [json.loads(data) for _, data in ride_events(frame)]
    from rides.stream.features import features_from_frame

    predicted = model.predict(features_from_frame(frame)).tolist()
    # every ride decided, with production's prediction and the shadow's, as the decision service stores them
    config = DecisionConfig.from_env({"REQUIRED_MODELS": "ride-duration"})
    items = {}
    for ride, value in zip(rides, predicted, strict=True):
        state = merged(
            None,
            [
                prediction_from(
                    {
                        "model": "ride-duration",
                        "version": v,
                        "role": role,
                        "prediction": {"ride_id": ride["ride_id"], "ride_duration": value},
                    }
                )
                for v, role in (("1", "production"), ("2", "shadow"))
            ],
            1_700_000_000.0,
            config,
        )
        items[state.ride_id] = state.to_item()
    payloads = [data for _, data, _ in completion_events(frame)]
    # numbered on from batch to batch, as one shard's records are (the mark skips what is at or before it)
    batches = [records_of(payloads[i : i + 500], i + 1) for i in range(0, len(payloads), 500)]
    best = 0.0
    for _ in range(3):
        store = EvaluationStore(InstantTable(items), "bench", decisions_table="decisions")
        started = time.perf_counter()
        pairs = 0
        for batch in batches:
            _, report = process_records(
                batch, EvaluationConfig("bench"), store=store, drift=None, dead_letters=DeadLetterSink(None, None)
            )
            pairs += len(report.evaluated)
        best = max(best, len(payloads) / (time.perf_counter() - started))
    assert pairs == 2 * len(frame), pairs

    # The shadow's cost per ride: a whole consumer pass (its own function) or a second
    # predict + encode inside the production consumer's pass.
    events = records_of(rides)
    config = ConsumerConfig(model_uri=model_dir, dry_run=True, model_version="2", model_role="shadow")
    own, shared = [], []
    for _ in range(5):
        started = time.perf_counter()
        batch = KinesisBatch(events)
        valid = batch.parse(read_ride)
        valid, features = _features(batch, valid)
        _predict(batch, valid, features, model, config)
        own.append(time.perf_counter() - started)
        started = time.perf_counter()
        _predict(batch, valid, features, model, config)
        shared.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "evaluation_records_per_s": best,
                "records": len(payloads),
                "shadow_own_function_us_per_ride": min(own) / len(rides) * 1e6,
                "shadow_in_consumer_us_per_ride": min(shared) / len(rides) * 1e6,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
