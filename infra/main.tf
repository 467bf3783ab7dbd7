# One apply per environment:
#   terraform init -backend-config=backend/stg.hcl
#   terraform apply -var-file=vars/stg.tfvars -var image_tag=<sha> [-var model_uri=... -var model_version=...]

module "input_stream" {
  source          = "./modules/kinesis_stream"
  name            = var.input_stream_name
  shard_count     = var.input_shard_count
  retention_hours = var.stream_retention_hours
}

module "predictions_stream" {
  source          = "./modules/kinesis_stream"
  name            = var.predictions_stream_name
  shard_count     = var.predictions_shard_count
  retention_hours = var.stream_retention_hours
}

module "decisions_stream" {
  source          = "./modules/kinesis_stream"
  name            = var.decisions_stream_name
  shard_count     = 1
  retention_hours = var.stream_retention_hours
}

module "model_bucket" {
  source = "./modules/model_bucket"
  name   = var.model_bucket_name
}

module "ecr" {
  source = "./modules/ecr_repository"
  name   = var.ecr_repository_name
}

module "dead_letter_queue" {
  source = "./modules/queue"
  name   = var.dead_letter_queue_name
}

module "failed_batches_queue" {
  source = "./modules/queue"
  name   = var.failed_batches_queue_name
}

module "decisions_table" {
  source = "./modules/decisions_table"
  name   = var.decisions_table_name
}

# The monthly batch scoring job, once its image is pushed and a model promoted.
module "batch_job" {
  source = "./modules/batch_job"
  count  = var.batch_image_tag != null && var.model_uri != "" ? 1 : 0

  function_name      = "ride-duration-batch"
  image_uri          = "${module.ecr.repository_url}:${coalesce(var.batch_image_tag, "none")}"
  model_uri          = var.model_uri
  model_version      = var.model_version
  model_bucket_arn   = local.model_bucket_arn
  output_bucket      = module.model_bucket.name
  database_url       = var.predictions_database_url
  log_retention_days = var.log_retention_days
}

locals {
  image_uri        = var.image_tag == null ? null : "${module.ecr.repository_url}:${var.image_tag}"
  model_bucket_arn = var.model_artifact_bucket == null ? module.model_bucket.arn : "arn:aws:s3:::${var.model_artifact_bucket}"

  # The consumers on ride-events: one code path, one entry each (rides/consumers.py holds the
  # same list; tests/test_infra.py keeps them equal). Adding a consumer is adding an entry.
  consumers = {
    duration = {
      function_name    = var.consumer_function_name
      model_name       = "ride-duration"
      prediction_field = "ride_duration"
      model_uri        = var.model_uri
      model_version    = var.model_version
    }
    fare = {
      function_name    = "ride-fare-consumer"
      model_name       = "ride-fare"
      prediction_field = "fare_amount"
      model_uri        = var.fare_model_uri
      model_version    = var.fare_model_version
    }
    tip = {
      function_name    = "ride-tip-consumer"
      model_name       = "ride-tip"
      prediction_field = "tip_amount"
      model_uri        = var.tip_model_uri
      model_version    = var.tip_model_version
    }
  }
}

module "consumer" {
  source   = "./modules/stream_consumer"
  for_each = local.consumers

  function_name        = each.value.function_name
  image_uri            = local.image_uri
  memory_mb            = var.consumer_memory_mb
  timeout_seconds      = var.consumer_timeout_seconds
  reserved_concurrency = var.consumer_reserved_concurrency
  log_retention_days   = var.log_retention_days

  model_name          = each.value.model_name
  prediction_field    = each.value.prediction_field
  model_uri           = each.value.model_uri
  model_version       = each.value.model_version
  publish_concurrency = var.publish_concurrency

  input_stream_arn         = module.input_stream.arn
  output_stream_arn        = module.predictions_stream.arn
  output_stream_name       = module.predictions_stream.name
  model_bucket_arn         = local.model_bucket_arn
  model_prefix             = "mlflow/"
  dead_letter_queue_arn    = module.dead_letter_queue.arn
  dead_letter_queue_url    = module.dead_letter_queue.url
  dead_letter_queue_name   = module.dead_letter_queue.name
  failed_batches_queue_arn = module.failed_batches_queue.arn

  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.maximum_batching_window_in_seconds
  starting_position                  = var.starting_position
  parallelization_factor             = var.parallelization_factor
  bisect_batch_on_function_error     = var.bisect_batch_on_function_error
  maximum_retry_attempts             = var.maximum_retry_attempts
  maximum_record_age_in_seconds      = var.maximum_record_age_in_seconds

  alarm_name_prefix     = "rides-${var.environment}"
  alarm_topic_arn       = var.alarm_topic_arn
  iterator_age_alarm_ms = var.iterator_age_alarm_ms
}

# Gathers the three predictions per ride and publishes decisions; same image, other command.
module "decision_service" {
  source = "./modules/decision_service"

  function_name            = "ride-decision-service"
  image_uri                = local.image_uri
  predictions_stream_arn   = module.predictions_stream.arn
  decisions_stream_arn     = module.decisions_stream.arn
  decisions_stream_name    = module.decisions_stream.name
  decisions_table_arn      = module.decisions_table.arn
  decisions_table_name     = module.decisions_table.name
  dead_letter_queue_arn    = module.dead_letter_queue.arn
  dead_letter_queue_url    = module.dead_letter_queue.url
  failed_batches_queue_arn = module.failed_batches_queue.arn
  required_models          = ["ride-duration", "ride-fare", "ride-tip"]
  timeout_seconds          = var.decision_timeout_seconds
  log_retention_days       = var.log_retention_days

  batch_size                         = var.batch_size
  maximum_batching_window_in_seconds = var.maximum_batching_window_in_seconds
  starting_position                  = var.starting_position
  bisect_batch_on_function_error     = var.bisect_batch_on_function_error
  maximum_retry_attempts             = var.maximum_retry_attempts
  maximum_record_age_in_seconds      = var.maximum_record_age_in_seconds

  alarm_name_prefix     = "rides-${var.environment}"
  alarm_topic_arn       = var.alarm_topic_arn
  iterator_age_alarm_ms = var.iterator_age_alarm_ms
}
