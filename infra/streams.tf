# The streams: ride events in, predictions, completions (ground truth), decisions; and what a
# producer may do with them.

module "input_stream" {
  source          = "./modules/kinesis_stream"
  kms_key_id      = local.stream_kms_key
  name            = local.names.input_stream
  shard_count     = var.input_shard_count
  retention_hours = var.stream_retention_hours
}

module "predictions_stream" {
  source          = "./modules/kinesis_stream"
  kms_key_id      = local.stream_kms_key
  name            = local.names.predictions_stream
  shard_count     = local.predictions_shard_count
  retention_hours = var.stream_retention_hours
}

# Ground truth: producers put a ride-completed event here when a ride ends. Its own stream, not
# ride-events: the consumers would otherwise be invoked for (and skip) as many records again.
module "completions_stream" {
  source          = "./modules/kinesis_stream"
  kms_key_id      = local.stream_kms_key
  name            = local.names.completions_stream
  shard_count     = var.input_shard_count
  retention_hours = var.stream_retention_hours
}

module "decisions_stream" {
  source          = "./modules/kinesis_stream"
  kms_key_id      = local.stream_kms_key
  name            = local.names.decisions_stream
  shard_count     = 1
  retention_hours = var.stream_retention_hours
}

# What a producer's role attaches: put ride events and their completions on this environment's
# two input streams, and nothing else (no reads, no other stream). ListShards: rides.producer
# groups KPL-aggregated rides by the shard each one's own key hashes to (tests/test_iam_calls.py
# records its calls).
resource "aws_iam_policy" "producer" {
  name        = "rides-producer${local.suffix}"
  description = "Put rides on ${local.names.input_stream} and completions on ${local.names.completions_stream}, nothing else."
  policy      = data.aws_iam_policy_document.producer.json
}

data "aws_iam_policy_document" "producer" {
  statement {
    sid       = "PutRidesAndCompletions"
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"]
    resources = [module.input_stream.arn, module.completions_stream.arn]
  }
  dynamic "statement" {
    for_each = local.stream_key_writes
    content {
      sid       = statement.value.sid
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }
}
