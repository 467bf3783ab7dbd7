"""Batch scoring: a month of TLC data or the rides table's new rows, predicted in bulk."""
