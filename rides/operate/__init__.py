"""What an operator runs against a deployed environment: reading streams, redrives, dead
letters, the smoke test, the archive and the evaluation report."""
