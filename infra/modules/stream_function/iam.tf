# Least privilege: read the input stream, send to the two queues, write its own logs and
# traces; everything else comes from the caller's policy_statements.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.function_name}-role"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "this" {
  statement {
    sid = "ReadInputStream"
    actions = [
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:GetRecords",
      "kinesis:GetShardIterator",
      "kinesis:ListShards",
      "kinesis:SubscribeToShard",
    ]
    resources = [var.input_stream_arn]
  }

  dynamic "statement" {
    for_each = var.enhanced_fan_out ? [1] : []
    content {
      sid       = "ReadThroughOwnStreamConsumer"
      actions   = ["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"]
      resources = [aws_kinesis_stream_consumer.this[0].arn]
    }
  }

  statement {
    sid       = "SendDeadLettersAndFailedBatches"
    actions   = ["sqs:SendMessage"]
    resources = [var.dead_letter_queue_arn, var.failed_batches_queue_arn]
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  statement {
    # X-Ray does not support resource-level permissions: "*" is the narrowest AWS allows.
    sid       = "WriteTraces"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = var.policy_statements
    content {
      sid       = statement.value.sid
      actions   = statement.value.actions
      resources = statement.value.resources
      dynamic "condition" {
        for_each = statement.value.s3_prefix == null ? [] : [statement.value.s3_prefix]
        content {
          test     = "StringLike"
          variable = "s3:prefix"
          values   = ["${condition.value}*"]
        }
      }
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "${var.function_name}-policy"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}
