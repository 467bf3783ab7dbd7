"""Measurements that must run in a fresh process holding only what is measured (a Lambda
container's imports, one month's scoring): bench/run.py starts each with `python -m`."""
