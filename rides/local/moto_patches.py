"""Changes to moto's own code that the embedded emulator makes before it serves (where moto
behaves in a way no AWS service does and the emulator cannot answer around it)."""

from __future__ import annotations


def copy_each_table_once() -> None:
    """moto backs a table up before a transaction by deep-copying it once per action: a
    100-action TransactWriteItems on a table of a few thousand items copied it 100 times and
    took seconds, which no DynamoDB table does, and held up every other call to the emulator.
    One copy per table per transaction is the same backup (all are taken before any action
    runs). The DynamoDB lock lets one request into moto at a time, so one memo serves."""
    import copy

    from moto.dynamodb import models

    if getattr(models.DynamoDBBackend.transact_write_items, "copies_each_table_once", False):
        return

    class _Copy:
        memo: dict | None = None

        def __getattr__(self, name):
            return getattr(copy, name)

        def deepcopy(self, obj, memo=None):
            if self.memo is None or not isinstance(obj, models.Table):
                return copy.deepcopy(obj, memo)
            if id(obj) not in self.memo:
                self.memo[id(obj)] = copy.deepcopy(obj)
            return self.memo[id(obj)]

    shim = _Copy()
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        shim.memo = {}
        try:
            return original(self, transact_items)
        finally:
            shim.memo = None

    transact_write_items.copies_each_table_once = True
    models.copy = shim
    models.DynamoDBBackend.transact_write_items = transact_write_items
