# The web service (rides serve) behind a function URL.

# The web service (rides serve) as a Lambda behind an IAM-authenticated function URL, once its
# image is pushed (web-<tag>) and the duration model promoted.
module "web_service" {
  source = "./modules/web_service"
  count  = var.web_service && local.image_uri != null && local.quick.uri != "" ? 1 : 0

  function_name        = local.names.web_service
  image_uri            = local.image_of["web-${coalesce(var.image_tag, "none")}"]
  policy_statements    = local.stream_key_writes
  input_stream_arn     = module.input_stream.arn
  decisions_table_arn  = module.decisions_table.arn
  model_bucket_arn     = local.model_bucket_arn
  reserved_concurrency = local.reserve ? var.web_reserved_concurrency : null
  log_retention_days   = var.log_retention_days
  alarm_name_prefix    = "rides-${var.environment}"
  alarm_topic_arn      = local.alarm_topic_arn
  rollout              = local.rollout
  api_keys             = var.web_api_keys

  # Exactly what the web app reads (tests/test_infra.py checks). It serves the quick model; the
  # enhanced answer is the stream's ride-duration prediction, read from the decisions table.
  environment = {
    MODEL_URI             = local.quick.uri
    MODEL_VERSION         = local.quick.version
    MODEL_NAME            = "ride-duration-quick"
    RIDES_INPUT_STREAM    = local.names.input_stream
    RIDES_DECISIONS_TABLE = local.names.decisions_table
  }
}
