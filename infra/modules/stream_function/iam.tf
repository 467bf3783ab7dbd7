# Least privilege: read the input stream (through its own stream consumer with enhanced
# fan-out) and send to the two queues; ../lambda_function adds its own logs and traces, and
# the caller's policy_statements the rest.
locals {
  read_statements = [
    {
      sid = "ReadInputStream"
      actions = [
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:ListShards",
        "kinesis:SubscribeToShard",
      ]
      resources = concat([var.input_stream_arn], values(var.extra_input_streams))
      s3_prefix = null
    },
    {
      sid       = "SendDeadLettersAndFailedBatches"
      actions   = ["sqs:SendMessage"]
      resources = [var.dead_letter_queue_arn, var.failed_batches_queue_arn]
      s3_prefix = null
    },
  ]
  fan_out_statements = [
    for consumer in aws_kinesis_stream_consumer.this : {
      sid       = "ReadThroughOwnStreamConsumer"
      actions   = ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"]
      resources = [consumer.arn]
      s3_prefix = null
    }
  ]
}
