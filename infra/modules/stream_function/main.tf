# A Lambda on a Kinesis stream: the function (container image), its log group, a
# least-privilege role, the event source mapping with partial batch responses and an
# on-failure destination, and alarms on iterator age and errors. The consumers and the
# decision service are each one use of it. Each apply publishes a version; the mapping calls
# the `live` alias, which only a release moves (../lambda_release).

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:Logs hold no ride data beyond dead letters already in the encrypted queue; CloudWatch encrypts at rest by default.
  #checkov:skip=CKV_AWS_338:Retention is a per-environment variable (prod sets 365 days).
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:A dead-letter queue applies to asynchronous invocations; this function is invoked by an event source mapping, whose on-failure destination is configured below.
  #checkov:skip=CKV_AWS_117:The function only calls AWS APIs (Kinesis, S3, SQS, DynamoDB); no VPC resources to reach.
  #checkov:skip=CKV_AWS_173:The environment holds names and URIs, no secrets.
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

# Enhanced fan-out: this function gets its own 2 MB/s per shard, pushed over SubscribeToShard,
# instead of sharing the shard's 5 GetRecords/s and 2 MB/s with every other mapping.
resource "aws_kinesis_stream_consumer" "this" {
  count      = var.enhanced_fan_out ? 1 : 0
  name       = var.function_name
  stream_arn = var.input_stream_arn
}

module "release" {
  source = "../lambda_release"

  function_name          = aws_lambda_function.this.function_name
  function_version       = aws_lambda_function.this.version
  deployment_config_name = var.rollout.deployment_config_name
  codedeploy_app_name    = var.rollout.codedeploy_app_name
  codedeploy_role_arn    = var.rollout.codedeploy_role_arn
  # A new version that errs, falls behind, or (a consumer) cannot serve its model rolls back.
  alarm_names = concat([for alarm in aws_cloudwatch_metric_alarm.this : alarm.alarm_name], var.rollout.extra_alarm_names)
}

resource "aws_lambda_event_source_mapping" "this" {
  event_source_arn                   = var.enhanced_fan_out ? aws_kinesis_stream_consumer.this[0].arn : var.input_stream_arn
  function_name                      = module.release.alias_arn
  starting_position                  = var.starting_position
  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.maximum_batching_window_in_seconds
  parallelization_factor             = var.parallelization_factor
  bisect_batch_on_function_error     = var.bisect_batch_on_function_error
  maximum_retry_attempts             = var.maximum_retry_attempts
  maximum_record_age_in_seconds      = var.maximum_record_age_in_seconds
  function_response_types            = ["ReportBatchItemFailures"]
  enabled                            = var.enabled

  destination_config {
    on_failure {
      destination_arn = var.failed_batches_queue_arn
    }
  }
}
