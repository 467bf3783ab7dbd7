"""The course's reference handler in a process of its own, shaped like our fast path's probe
(bench.probes.fast_path): the same event file, one warm-up, then timed batch by batch.

The handler is the course's: for each record, decode, build the features dict, pyfunc
`predict` on that one ride, build the prediction record and, with `--publish STREAM`,
`put_record` it (one call per record); the model is the course's scikit-learn pipeline,
loaded with MLflow's pyfunc at init as the course's Lambda does.

    python -m bench.probes.reference MODEL_DIR EVENT_FILE REPEATS [--publish STREAM] [--records N]
"""

import argparse
import base64
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("event_file")
    parser.add_argument("repeats", type=int)
    parser.add_argument("--publish", default=None, help="put_record each prediction on this stream")
    parser.add_argument("--records", type=int, default=None, help="only the first N records of the event")
    args = parser.parse_args()

    import boto3
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(args.model_dir)
    kinesis = boto3.client("kinesis") if args.publish else None
    with open(args.event_file) as handle:
        records = json.load(handle)["Records"][: args.records]

    def handler() -> None:
        for record in records:
            ride_event = json.loads(base64.b64decode(record["kinesis"]["data"]))
            ride = ride_event["ride"]
            features = {
                "PU_DO": f"{ride['PULocationID']}_{ride['DOLocationID']}",
                "trip_distance": ride["trip_distance"],
            }
            prediction = float(model.predict([features])[0])
            body = {
                "model": "ride_duration_prediction_model",
                "version": "1",
                "prediction": {"ride_duration": prediction, "ride_id": ride_event["ride_id"]},
            }
            if kinesis is not None:
                kinesis.put_record(
                    StreamName=args.publish, PartitionKey=str(ride_event["ride_id"]), Data=json.dumps(body)
                )

    handler()  # the warm-up, as the fast path's probe has
    times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        handler()
        times.append(time.perf_counter() - started)
    print(json.dumps({"records": len(records), "times": times}))


if __name__ == "__main__":
    main()
