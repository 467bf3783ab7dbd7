"""What an operator runs against a deployed environment: reading streams, redrives, the smoke test."""
