# The stream functions (the consumers, the decision service, the evaluation) and what each may
# do besides reading its stream.

module "consumer" {
  source   = "./modules/stream_function"
  for_each = local.stream_consumers

  function_name        = each.value.function_name
  image_uri            = local.image_uri
  zip_package          = local.zip_package
  memory_mb            = var.consumer_memory_mb
  timeout_seconds      = var.consumer_timeout_seconds
  reserved_concurrency = local.reserve ? var.consumer_reserved_concurrency : null
  log_retention_days   = var.log_retention_days

  # Exactly the variables the handler reads (tests/test_infra.py checks both ways).
  environment = {
    MODEL_URI                    = each.value.model_uri
    MODEL_NAME                   = each.value.model_name
    MODEL_VERSION                = each.value.model_version
    PREDICTION_FIELD             = each.value.prediction_field
    MODEL_ROLE                   = each.value.role
    PREDICTIONS_STREAM_NAME      = module.predictions_stream.name
    DEAD_LETTER_QUEUE_URL        = module.dead_letter_queue.url
    DRY_RUN                      = "false"
    PUBLISH_CONCURRENCY          = tostring(var.publish_concurrency)
    PUBLISH_AGGREGATED           = tostring(var.publish_aggregated)
    POWERTOOLS_SERVICE_NAME      = each.value.function_name
    POWERTOOLS_METRICS_NAMESPACE = "rides"
  }
  policy_statements = concat(local.consumer_statements, local.stream_key_writes, local.stream_key_reads)

  input_stream_arn         = module.input_stream.arn
  enhanced_fan_out         = var.enhanced_fan_out
  dead_letter_queue_arn    = module.dead_letter_queue.arn
  failed_batches_queue_arn = module.failed_batches_queue.arn
  # Without a model every record would be retried until it expires: wait for a promotion.
  enabled = each.value.model_uri != ""

  # A shadow starts on what arrives once it exists.
  event_source = merge(local.event_sources.consumer, {
    starting_position = each.value.role == "shadow" ? "LATEST" : local.event_sources.consumer.starting_position
  })

  alarm_name_prefix     = "rides-${var.environment}"
  alarm_topic_arn       = local.alarm_topic_arn
  iterator_age_alarm_ms = var.iterator_age_alarm_ms
  rollout = merge(local.rollout, {
    extra_alarm_names = [aws_cloudwatch_metric_alarm.operator["${each.value.function_name}-model-faults"].alarm_name]
  })
}

# Gathers the three predictions per ride and publishes decisions; same image, other handler.
module "decision_service" {
  source = "./modules/stream_function"

  function_name        = local.names.decision_service
  image_uri            = local.image_uri
  zip_package          = local.zip_package
  image_command        = ["lambda_function.decision_handler.lambda_handler"]
  memory_mb            = 512
  reserved_concurrency = local.reserve ? 5 : null
  log_retention_days   = var.log_retention_days

  # Exactly the variables the decision handler reads (tests/test_infra.py checks both ways).
  environment = {
    DECISIONS_TABLE          = module.decisions_table.name
    DECISIONS_STREAM_NAME    = module.decisions_stream.name
    DEAD_LETTER_QUEUE_URL    = module.dead_letter_queue.url
    REVIEW_QUEUE_URL         = module.review_queue.url
    REQUIRED_MODELS          = join(",", [for consumer in local.consumers : consumer.model_name])
    DECISION_TIMEOUT_SECONDS = tostring(var.decision_timeout_seconds)
    DECISION_RULES           = var.decision_rules_json
    PUBLISH_AGGREGATED       = tostring(var.publish_aggregated)
    POWERTOOLS_SERVICE_NAME  = local.names.decision_service
  }
  policy_statements = concat(local.decision_statements, local.stream_key_writes, local.stream_key_reads)

  input_stream_arn         = module.predictions_stream.arn
  dead_letter_queue_arn    = module.dead_letter_queue.arn
  failed_batches_queue_arn = module.failed_batches_queue.arn

  event_source = local.event_sources.decisions

  alarm_name_prefix     = "rides-${var.environment}"
  alarm_topic_arn       = local.alarm_topic_arn
  iterator_age_alarm_ms = var.iterator_age_alarm_ms
  rollout               = local.rollout
}

# Live evaluation: joins every ride's outcome with the predictions the decision service stored
# for it, and watches drift; one function, two mappings (rides/stream/evaluation/service.py
# reads which is which from each record) and a sweep for outcomes that came before the decision. Its metrics: EvaluatedRides, SquaredError, AbsoluteError, Error per model, version and
# role; FeatureDrift per feature; MaxFeatureDrift (the drift alarm below).
module "evaluation" {
  source = "./modules/stream_function"

  function_name        = local.names.evaluation
  image_uri            = local.image_uri
  zip_package          = local.zip_package
  image_command        = ["lambda_function.evaluation_handler.lambda_handler"]
  memory_mb            = 512
  reserved_concurrency = local.reserve ? 5 : null
  log_retention_days   = var.log_retention_days

  # Exactly the variables the evaluation handler reads (tests/test_infra.py checks both ways).
  environment = {
    EVALUATIONS_TABLE       = module.evaluations_table.name
    DECISIONS_TABLE         = module.decisions_table.name
    DEAD_LETTER_QUEUE_URL   = module.dead_letter_queue.url
    EVALUATION_WINDOW_HOURS = tostring(var.evaluation_window_hours)
    DRIFT_REFERENCE_URI     = local.consumers.duration.model_uri
    DRIFT_MODEL             = "ride-duration"
    # a ride is counted once every consumer and the challenger (if one runs) has predicted it,
    # or after 15 min
    EVALUATED_MODELS             = join(",", [for consumer in values(local.consumers) : consumer.model_name])
    SHADOW_MODELS                = local.shadow.uri == "" ? "" : "ride-duration"
    JOIN_WAIT_SECONDS            = "900"
    SWEEP_INTERVAL_SECONDS       = "60" # module.evaluation_sweep's rate(1 minute)
    POWERTOOLS_SERVICE_NAME      = local.names.evaluation
    POWERTOOLS_METRICS_NAMESPACE = "rides"
  }
  policy_statements = concat(local.evaluation_statements, local.stream_key_reads)

  input_stream_arn = module.completions_stream.arn
  extra_input_streams = {
    rides = module.input_stream.arn
  }
  dead_letter_queue_arn    = module.dead_letter_queue.arn
  failed_batches_queue_arn = module.failed_batches_queue.arn

  event_source = local.event_sources.evaluation

  alarm_name_prefix     = "rides-${var.environment}"
  alarm_topic_arn       = local.alarm_topic_arn
  iterator_age_alarm_ms = var.iterator_age_alarm_ms
  rollout               = local.rollout
}

# What each stream function may do besides reading its stream (modules/stream_function) and the
# streams' customer-managed key when there is one: named so tests/test_iam_calls.py can hold them
# to the calls the code makes.
locals {
  consumer_statements = [
    {
      sid       = "WritePredictions"
      actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"]
      resources = [module.predictions_stream.arn]
    },
    {
      sid       = "ReadModels"
      actions   = ["s3:GetObject"]
      resources = ["${local.model_bucket_arn}/mlflow/*"]
    },
    {
      # Lets a missing model file answer 404 (a clear error) instead of 403.
      sid       = "ListModelPrefix"
      actions   = ["s3:ListBucket"]
      resources = [local.model_bucket_arn]
      s3_prefix = "mlflow/"
    },
  ]
  decision_statements = [
    {
      sid       = "WriteDecisions"
      actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"]
      resources = [module.decisions_stream.arn]
    },
    {
      sid = "RideTable"
      # Conditional PutItem/UpdateItem per ride (optimistic locking), the sweep's Query, and
      # DeleteItem of the sweep's watch items once their rides are done.
      actions = [
        "dynamodb:BatchGetItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
      ]
      resources = [module.decisions_table.arn, "${module.decisions_table.arn}/index/due-index"]
    },
    {
      sid       = "QueueForReview"
      actions   = ["sqs:SendMessage"]
      resources = [module.review_queue.arn]
    },
  ]
  evaluation_statements = [
    {
      sid = "EvaluationTable"
      # The sums, marks and waiting completions: written in transactions (TransactWriteItems
      # is authorized action by action), read with GetItem and Query; drift counts: UpdateItem.
      actions = [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
      ]
      resources = [module.evaluations_table.arn]
    },
    {
      sid       = "ReadRidePredictions"
      actions   = ["dynamodb:BatchGetItem"]
      resources = [module.decisions_table.arn]
    },
    {
      sid       = "ReadDriftReference"
      actions   = ["s3:GetObject"]
      resources = ["${local.model_bucket_arn}/mlflow/*"]
    },
  ]
}
