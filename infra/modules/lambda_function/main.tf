# One Lambda function as every function here is built (the consumers, the decision service,
# the web service, the scoring job): its log group, a least-privilege role (the caller's
# statements plus its own logs and traces, and network interfaces when it runs in a VPC), the
# function from an image or a zip on S3, published on every apply, alarms on its metrics, and
# the `live` alias that only a release moves (../lambda_release). What triggers it is the
# caller's: an event source mapping, a function URL, a schedule.

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:Logs hold counts, request metadata and dead letters already in the encrypted queue; CloudWatch encrypts at rest by default.
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
    # Lambda's network interfaces in the VPC; EC2 allows no narrower resource for these.
    for_each = var.network == null ? [] : [1]
    content {
      sid = "NetworkInterfaces"
      actions = [
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
      ]
      resources = ["*"]
    }
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

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:No function here is invoked asynchronously: event source mappings have their on-failure destination, the web service answers synchronously, the scoring job's schedule retries and the job resumes from its parts.
  #checkov:skip=CKV_AWS_117:In a VPC whenever there is something in one to reach (var.network: the scoring job with a database); the others call AWS APIs only.
  #checkov:skip=CKV_AWS_173:The environments hold names, URIs and a secret's ARN, never a credential.
  #checkov:skip=CKV_AWS_272:Code signing does not apply to container images; the zip variant is for emulators and small accounts.
  function_name                  = var.function_name
  role                           = aws_iam_role.this.arn
  package_type                   = var.zip_package == null ? "Image" : "Zip"
  image_uri                      = var.zip_package == null ? var.image_uri : null
  s3_bucket                      = try(var.zip_package.s3_bucket, null)
  s3_key                         = try(var.zip_package.s3_key, null)
  s3_object_version              = try(var.zip_package.s3_object_version, null)
  source_code_hash               = try(var.zip_package.source_code_hash, null)
  runtime                        = var.zip_package == null ? null : "python3.12"
  handler                        = var.zip_package == null ? null : coalesce(try(var.image_command[0], null), "lambda_function.handler.lambda_handler")
  memory_size                    = var.memory_mb
  timeout                        = var.timeout_seconds
  reserved_concurrent_executions = var.reserved_concurrency
  architectures                  = ["x86_64"]
  publish                        = true

  dynamic "image_config" {
    for_each = var.zip_package == null && var.image_command != null ? [var.image_command] : []
    content {
      command = image_config.value
    }
  }

  environment {
    variables = var.environment
  }

  dynamic "vpc_config" {
    for_each = var.network == null ? [] : [var.network]
    content {
      subnet_ids         = vpc_config.value.subnet_ids
      security_group_ids = vpc_config.value.security_group_ids
    }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.this, aws_iam_role_policy.this]

  lifecycle {
    precondition {
      condition     = var.image_uri != null || var.zip_package != null
      error_message = "Set image_tag (terraform apply -var image_tag=<tag pushed to ECR>), or lambda_zip."
    }
  }
}

locals {
  alarm_actions = var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each            = var.alarms
  alarm_name          = "${var.alarm_name_prefix}-${var.function_name}-${each.key}"
  alarm_description   = "${var.function_name} is ${each.value.what}."
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = each.value.periods
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

module "release" {
  source = "../lambda_release"

  function_name          = aws_lambda_function.this.function_name
  function_version       = aws_lambda_function.this.version
  deployment_config_name = var.rollout.deployment_config_name
  codedeploy_app_name    = var.rollout.codedeploy_app_name
  codedeploy_role_arn    = var.rollout.codedeploy_role_arn
  # A new version that errs (or falls behind, or cannot serve its model) rolls back.
  alarm_names = concat([for alarm in aws_cloudwatch_metric_alarm.this : alarm.alarm_name], var.rollout.extra_alarm_names)
}
