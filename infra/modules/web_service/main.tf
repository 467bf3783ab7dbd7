# The web service on AWS, serverless like the rest: its container image as a Lambda (the AWS
# Lambda Web Adapter in the image runs the same uvicorn server as `rides serve`), reached
# through a function URL that only signed (IAM) requests may call, throttled by reserved
# concurrency, with alarms on errors and throttles. Its role may put ride events on the input
# stream (the consent mode) and read the decisions table, nothing else.

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:Logs hold request metadata only; CloudWatch encrypts at rest by default.
  #checkov:skip=CKV_AWS_338:Retention is a per-environment variable (prod sets 365 days).
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
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
    sid       = "PutRideEventsWithConsent"
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"]
    resources = [var.input_stream_arn]
  }

  statement {
    sid       = "ReadStreamedPredictions"
    actions   = ["dynamodb:GetItem"]
    resources = [var.decisions_table_arn]
  }

  statement {
    sid       = "ReadModels"
    actions   = ["s3:GetObject"]
    resources = ["${var.model_bucket_arn}/mlflow/*"]
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

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:Function URL requests are synchronous; a dead-letter queue applies to asynchronous invocations only.
  #checkov:skip=CKV_AWS_117:The function only calls AWS APIs (Kinesis, S3, DynamoDB); no VPC resources to reach.
  #checkov:skip=CKV_AWS_173:The environment holds names and URIs, no secrets.
  #checkov:skip=CKV_AWS_272:Code signing does not apply to container images.
  function_name                  = var.function_name
  role                           = aws_iam_role.this.arn
  package_type                   = "Image"
  image_uri                      = var.image_uri
  memory_size                    = var.memory_mb
  timeout                        = 10
  reserved_concurrent_executions = var.reserved_concurrency
  architectures                  = ["x86_64"]
  publish                        = true

  environment {
    variables = merge(var.environment, {
      # The Lambda Web Adapter forwards each request to the server on PORT once /health answers.
      PORT                         = "8000"
      AWS_LWA_READINESS_CHECK_PATH = "/health"
      RIDES_HOME                   = "/tmp/rides"
    })
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.this, aws_iam_role_policy.this]
}

# Only requests signed by a principal allowed lambda:InvokeFunctionUrl reach the service:
# nobody on the internet can put rides on the stream or read another ride's predictions.
# The URL serves the `live` alias, which a release moves (canary through CodeDeploy in prod).
resource "aws_lambda_function_url" "this" {
  function_name      = aws_lambda_function.this.function_name
  qualifier          = module.release.alias_name
  authorization_type = "AWS_IAM"
}

module "release" {
  source = "../lambda_release"

  function_name          = aws_lambda_function.this.function_name
  function_version       = aws_lambda_function.this.version
  deployment_config_name = var.rollout.deployment_config_name
  codedeploy_app_name    = var.rollout.codedeploy_app_name
  codedeploy_role_arn    = var.rollout.codedeploy_role_arn
  alarm_names            = [for alarm in aws_cloudwatch_metric_alarm.this : alarm.alarm_name]
}

locals {
  alarm_actions = var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]
  alarms = {
    errors    = { metric = "Errors", what = "failing requests" }
    throttles = { metric = "Throttles", what = "throttling requests (reserved concurrency reached)" }
  }
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each            = local.alarms
  alarm_name          = "${var.alarm_name_prefix}-${var.function_name}-${each.key}"
  alarm_description   = "${var.function_name} is ${each.value.what}."
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
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
