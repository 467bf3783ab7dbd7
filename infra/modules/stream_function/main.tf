# A Lambda on a Kinesis stream: the function (../lambda_function: image or zip, log group,
# least-privilege role, alarms, the `live` alias), the event source mapping with partial batch
# responses and an on-failure destination, and an alarm on iterator age besides errors. The
# consumers and the decision service are each one use of it.

module "function" {
  source = "../lambda_function"

  function_name        = var.function_name
  image_uri            = var.image_uri
  image_command        = var.image_command
  zip_package          = var.zip_package
  environment          = var.environment
  memory_mb            = var.memory_mb
  timeout_seconds      = var.timeout_seconds
  reserved_concurrency = var.reserved_concurrency
  log_retention_days   = var.log_retention_days
  policy_statements    = concat(local.read_statements, local.fan_out_statements, var.policy_statements)
  alarms               = local.alarms
  alarm_name_prefix    = var.alarm_name_prefix
  alarm_topic_arn      = var.alarm_topic_arn
  rollout              = var.rollout
}

# Enhanced fan-out: this function gets its own 2 MB/s per shard, pushed over SubscribeToShard,
# instead of sharing the shard's 5 GetRecords/s and 2 MB/s with every other mapping.
resource "aws_kinesis_stream_consumer" "this" {
  count      = var.enhanced_fan_out ? 1 : 0
  name       = var.function_name
  stream_arn = var.input_stream_arn
}

resource "aws_lambda_event_source_mapping" "this" {
  event_source_arn                   = var.enhanced_fan_out ? aws_kinesis_stream_consumer.this[0].arn : var.input_stream_arn
  function_name                      = module.function.alias_arn
  starting_position                  = var.event_source.starting_position
  batch_size                         = var.event_source.batch_size
  maximum_batching_window_in_seconds = var.event_source.maximum_batching_window_in_seconds
  parallelization_factor             = var.event_source.parallelization_factor
  bisect_batch_on_function_error     = var.event_source.bisect_batch_on_function_error
  maximum_retry_attempts             = var.event_source.maximum_retry_attempts
  maximum_record_age_in_seconds      = var.event_source.maximum_record_age_in_seconds
  function_response_types            = ["ReportBatchItemFailures"]
  enabled                            = var.enabled

  destination_config {
    on_failure {
      destination_arn = var.failed_batches_queue_arn
    }
  }
}

resource "aws_lambda_event_source_mapping" "extra" {
  for_each                           = var.extra_input_streams
  event_source_arn                   = each.value
  function_name                      = module.function.alias_arn
  starting_position                  = var.event_source.starting_position
  batch_size                         = var.event_source.batch_size
  maximum_batching_window_in_seconds = var.event_source.maximum_batching_window_in_seconds
  parallelization_factor             = var.event_source.parallelization_factor
  bisect_batch_on_function_error     = var.event_source.bisect_batch_on_function_error
  maximum_retry_attempts             = var.event_source.maximum_retry_attempts
  maximum_record_age_in_seconds      = var.event_source.maximum_record_age_in_seconds
  function_response_types            = ["ReportBatchItemFailures"]
  enabled                            = var.enabled

  destination_config {
    on_failure {
      destination_arn = var.failed_batches_queue_arn
    }
  }
}

# Where these resources were before the function became ../lambda_function: an existing
# state moves instead of destroying and recreating the functions.
moved {
  from = aws_cloudwatch_log_group.this
  to   = module.function.aws_cloudwatch_log_group.this
}

moved {
  from = aws_iam_role.this
  to   = module.function.aws_iam_role.this
}

moved {
  from = aws_iam_role_policy.this
  to   = module.function.aws_iam_role_policy.this
}

moved {
  from = aws_lambda_function.this
  to   = module.function.aws_lambda_function.this
}

moved {
  from = aws_cloudwatch_metric_alarm.this
  to   = module.function.aws_cloudwatch_metric_alarm.this
}

moved {
  from = module.release
  to   = module.function.module.release
}
