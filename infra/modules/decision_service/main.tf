# The decision service: a Lambda on the predictions stream (parallelization factor 1, so one
# writer per ride), plus a schedule that runs its timeout sweep.

locals {
  # Exactly the variables the decision handler reads (tests/test_infra.py checks both ways).
  environment = {
    DECISIONS_TABLE          = var.decisions_table_name
    DECISIONS_STREAM_NAME    = var.decisions_stream_name
    DEAD_LETTER_QUEUE_URL    = var.dead_letter_queue_url
    REQUIRED_MODELS          = join(",", var.required_models)
    DECISION_TIMEOUT_SECONDS = tostring(var.timeout_seconds)
    DECISION_RULES           = var.rules_json
    POWERTOOLS_SERVICE_NAME  = var.function_name
  }
  alarm_actions = var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:Logs hold counts only; CloudWatch encrypts at rest by default.
  #checkov:skip=CKV_AWS_338:Retention is a per-environment variable (prod sets 365 days).
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:Invoked by an event source mapping (on-failure destination below) and a schedule that repeats every minute.
  #checkov:skip=CKV_AWS_117:The function only calls AWS APIs (Kinesis, DynamoDB, SQS); no VPC resources to reach.
  #checkov:skip=CKV_AWS_173:The environment holds names and URLs, no secrets.
  #checkov:skip=CKV_AWS_272:Code signing does not apply to container images.
  function_name                  = var.function_name
  role                           = aws_iam_role.this.arn
  package_type                   = "Image"
  image_uri                      = var.image_uri
  memory_size                    = var.memory_mb
  timeout                        = var.function_timeout_seconds
  reserved_concurrent_executions = var.reserved_concurrency

  image_config {
    command = ["lambda_function.decision_handler.lambda_handler"]
  }

  environment {
    variables = local.environment
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.this, aws_iam_role_policy.this]

  lifecycle {
    precondition {
      condition     = var.image_uri != null
      error_message = "Set image_tag (terraform apply -var image_tag=<tag pushed to ECR>)."
    }
  }
}

resource "aws_lambda_event_source_mapping" "this" {
  event_source_arn                   = var.predictions_stream_arn
  function_name                      = aws_lambda_function.this.arn
  starting_position                  = var.starting_position
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.maximum_batching_window_in_seconds
  parallelization_factor             = 1 # one writer per ride: see rides/decision.py
  bisect_batch_on_function_error     = var.bisect_batch_on_function_error
  maximum_retry_attempts             = var.maximum_retry_attempts
  maximum_record_age_in_seconds      = var.maximum_record_age_in_seconds
  function_response_types            = ["ReportBatchItemFailures"]

  destination_config {
    on_failure {
      destination_arn = var.failed_batches_queue_arn
    }
  }
}

resource "aws_cloudwatch_event_rule" "sweep" {
  name                = "${var.function_name}-sweep"
  description         = "Decide rides whose predictions stopped coming."
  schedule_expression = var.sweep_schedule
}

resource "aws_cloudwatch_event_target" "sweep" {
  rule  = aws_cloudwatch_event_rule.sweep.name
  arn   = aws_lambda_function.this.arn
  input = jsonencode({ sweep = true })
}

resource "aws_lambda_permission" "sweep" {
  statement_id  = "AllowSweepSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.sweep.arn
}

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
    sid = "ReadPredictionsStream"
    actions = [
      "kinesis:DescribeStream",
      "kinesis:DescribeStreamSummary",
      "kinesis:GetRecords",
      "kinesis:GetShardIterator",
      "kinesis:ListShards",
      "kinesis:SubscribeToShard",
    ]
    resources = [var.predictions_stream_arn]
  }

  statement {
    sid       = "WriteDecisionsStream"
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"]
    resources = [var.decisions_stream_arn]
  }

  statement {
    sid = "RideTable"
    actions = [
      "dynamodb:BatchGetItem",
      "dynamodb:BatchWriteItem",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
    ]
    resources = [var.decisions_table_arn, "${var.decisions_table_arn}/index/pending-index"]
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
}

resource "aws_iam_role_policy" "this" {
  name   = "${var.function_name}-policy"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_cloudwatch_metric_alarm" "iterator_age" {
  alarm_name          = "${var.alarm_name_prefix}-${var.function_name}-iterator-age"
  alarm_description   = "The decision service is falling behind the predictions stream."
  namespace           = "AWS/Lambda"
  metric_name         = "IteratorAge"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.iterator_age_alarm_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  alarm_name          = "${var.alarm_name_prefix}-${var.function_name}-errors"
  alarm_description   = "The decision service raised errors."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

output "function_name" {
  description = "The decision service function."
  value       = aws_lambda_function.this.function_name
}
