output "input_stream_name" {
  description = "Where producers put ride events."
  value       = module.input_stream.name
}

output "predictions_stream_name" {
  description = "Where predictions arrive."
  value       = module.predictions_stream.name
}

output "model_bucket" {
  description = "MLflow artifact bucket (artifact root s3://<bucket>/mlflow)."
  value       = module.model_bucket.name
}

output "ecr_repository_url" {
  description = "Push the consumer image here."
  value       = module.ecr.repository_url
}

output "consumer_function_names" {
  description = "The consumer Lambdas by consumer (`rides promote --to lambda --function ...`)."
  value       = { for key, consumer in module.consumer : key => consumer.function_name }
}

output "dead_letter_queue_url" {
  description = "Malformed records, with their reason."
  value       = module.dead_letter_queue.url
}

output "completions_stream_name" {
  description = "Where producers put ride-completed events (ground truth)."
  value       = module.completions_stream.name
}

output "evaluations_table_name" {
  description = "Live evaluation's table (rides evaluate reads it)."
  value       = module.evaluations_table.name
}

output "review_queue_url" {
  description = "Rides decided `review`: `rides review --queue-url` lists them."
  value       = module.review_queue.url
}

output "failed_batches_queue_url" {
  description = "Batches the event source mapping gave up on."
  value       = module.failed_batches_queue.url
}

output "deployed" {
  description = "What this environment serves: image tags and each model's location and version (scripts/deploy.sh rolls back to it)."
  value = {
    image_tag       = var.image_tag
    batch_image_tag = var.batch_image_tag
    image_digests   = var.image_digests
    # keyed as var.models: the stream models, the web's quick model, the shadow (an empty uri:
    # nothing served)
    models = merge(
      { for key, consumer in local.consumers : consumer.model_name => { uri = consumer.model_uri, version = consumer.model_version } },
      { "ride-duration-quick" = local.quick, "ride-duration@shadow" = local.shadow },
    )
  }
}

output "names" {
  description = "Every resource name of this environment (scripts/deploy.sh exports them as RIDES_* for the rides CLI)."
  value = merge(local.names, {
    consumer_function = local.consumers.duration.function_name
    model_bucket      = module.model_bucket.name
  })
}

output "producer_policy_arn" {
  description = "Attach to a producer's role: it may put ride events on the input stream and nothing else."
  value       = aws_iam_policy.producer.arn
}

output "alarm_topic_arn" {
  description = "Where this environment's alarms notify."
  value       = local.alarm_topic_arn
}

output "web_service_url" {
  description = "The web service (IAM-signed requests only); null until it is deployed."
  value       = one(module.web_service[*].url)
}

output "releases" {
  description = "Every function's alias and the version this apply published (scripts/deploy.sh: rides release)."
  value = concat(
    [for consumer in module.consumer : consumer.release],
    [module.decision_service.release],
    [module.evaluation.release],
    module.web_service[*].release,
    module.batch_job[*].release,
  )
}

output "mlflow_tracking_uri" {
  description = "MLFLOW_TRACKING_URI for the rides CLI (rides train, resolve, promote; scripts/deploy.sh)."
  value       = one(module.mlflow[*].tracking_uri)
}
