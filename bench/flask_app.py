"""The MLOps Zoomcamp's web-service pattern, for comparison in `make bench`: Flask under
gunicorn, one model call per request. Same model and feature function as `rides serve`."""

import os

from flask import Flask, jsonify, request

from rides.stream.events import validate_event
from rides.stream.features import features_from_events
from rides.stream.model import load_model

model = load_model(os.environ["MODEL_URI"], version=os.environ.get("MODEL_VERSION"))
app = Flask("duration-prediction")


@app.route("/predict", methods=["POST"])
def predict_endpoint():
    event = validate_event(request.get_json())
    prediction = model.predict(features_from_events([event]))[0]
    return jsonify(
        {"ride_id": event.ride_id, "ride_duration": float(prediction), "model": model.name, "version": model.version}
    )
