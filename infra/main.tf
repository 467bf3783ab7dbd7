# One apply per environment:
#   terraform init -backend-config=backend/stg.hcl
#   terraform apply -var-file=vars/stg.tfvars -var image_tag=<sha> \
#     [-var 'models={"ride-duration"={uri="s3://...", version="3"}, ...}']
#
# The root module by concern: streams.tf, storage.tf, functions.tf (the stream functions and
# their permissions), archive.tf, operations.tf (sweeps, alarms), web.tf, batch.tf, releases.tf
# (CodeDeploy); here, the names, the consumers and the event-source policy every file uses.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  # Every name carries the environment (ride-events-stg, ride-events-prod), so environments
  # can share an account; the local stack's names are the plain ones (plain_names = true).
  suffix = var.plain_names ? "" : "-${var.environment}"
  names = {
    input_stream           = "${var.input_stream_name}${local.suffix}"
    predictions_stream     = "${var.predictions_stream_name}${local.suffix}"
    decisions_stream       = "${var.decisions_stream_name}${local.suffix}"
    dead_letter_queue      = "${var.dead_letter_queue_name}${local.suffix}"
    failed_batches_queue   = "${var.failed_batches_queue_name}${local.suffix}"
    review_queue           = "${var.review_queue_name}${local.suffix}"
    completions_stream     = "${var.completions_stream_name}${local.suffix}"
    evaluations_table      = "${var.evaluations_table_name}${local.suffix}"
    evaluation             = "ride-evaluation${local.suffix}"
    shadow_consumer        = "ride-duration-shadow-consumer${local.suffix}"
    archive                = "rides-archive${local.suffix}"
    decisions_table        = "${var.decisions_table_name}${local.suffix}"
    ecr_repository         = "${var.ecr_repository_name}${local.suffix}"
    decision_service       = "ride-decision-service${local.suffix}"
    decision_sweep         = "ride-decision-sweep${local.suffix}"
    evaluation_sweep       = "ride-evaluation-sweep${local.suffix}"
    batch_job              = "ride-duration-batch${local.suffix}"
    batch_database         = "rides-predictions${local.suffix}"
    mlflow_tracking_server = "rides${local.suffix}"
    web_service            = "ride-web${local.suffix}"
  }

  # Every ride event becomes one prediction per consumer, so the predictions stream takes
  # length(local.consumers) times the input's records (and bytes: a prediction record is about
  # the size of a ride event): it gets that many times the input's shards.
  predictions_shard_count = (
    var.predictions_shard_count != null ? var.predictions_shard_count :
    var.input_shard_count == null ? null : var.input_shard_count * length(local.stream_consumers)
  )
  alarm_topic_arn = var.alarm_topic_arn != null ? var.alarm_topic_arn : aws_sns_topic.alarms.arn
  alarm_actions   = [local.alarm_topic_arn]
  image_uri       = var.image_tag == null ? null : local.image_of[var.image_tag]
  # Each image by digest where the deploy recorded one (what staging tested, byte for byte).
  image_of = { for tag in toset(compact([var.image_tag, var.batch_image_tag, "web-${coalesce(var.image_tag, "none")}", "none"])) :
    tag => lookup(var.image_digests, tag, null) == null ? "${module.ecr.repository_url}:${tag}" : "${module.ecr.repository_url}@${var.image_digests[tag]}"
  }
  model_bucket_arn = local.model_artifact_bucket == null ? module.model_bucket.arn : "arn:${local.partition}:s3:::${local.model_artifact_bucket}"
  partition        = data.aws_partition.current.partition
  account_id       = data.aws_caller_identity.current.account_id
  # Bucket names are global: derived from the account and region unless given (the local stack's
  # are plain). An environment's bucket name is the same rule, so prod finds staging's.
  bucket_name = { for env in toset([var.environment, coalesce(var.model_artifact_environment, var.environment)]) :
  env => "${var.name_prefix}-models-${env}-${local.account_id}-${var.aws_region}" }
  model_bucket_name = coalesce(var.model_bucket_name, local.bucket_name[var.environment])
  model_artifact_bucket = (
    var.model_artifact_bucket != null ? var.model_artifact_bucket :
    var.model_artifact_environment == null ? null : local.bucket_name[var.model_artifact_environment]
  )
  # Reservations only when asked for (var.reserve_concurrency): a new account refuses them.
  reserve = var.reserve_concurrency
  # The streams' key: customer-managed when given, and then every writer and reader is granted
  # its use (an AWS-managed key's policy grants the account's IAM principals by itself).
  stream_kms_key = coalesce(var.stream_kms_key_arn, "alias/aws/kinesis")
  stream_key_writes = var.stream_kms_key_arn == null ? [] : [
    { sid = "EncryptStreamRecords", actions = ["kms:GenerateDataKey"], resources = [var.stream_kms_key_arn] }
  ]
  stream_key_reads = var.stream_kms_key_arn == null ? [] : [
    { sid = "DecryptStreamRecords", actions = ["kms:Decrypt"], resources = [var.stream_kms_key_arn] }
  ]

  # What each model serves, by registered name: var.models over the per-model variables of
  # before (deprecated; still read, so an apply written for them keeps working). A model
  # without a location is left out: its function's mapping stays disabled.
  legacy_models = {
    "ride-duration"        = { uri = var.model_uri, version = var.model_version }
    "ride-fare"            = { uri = var.fare_model_uri, version = var.fare_model_version }
    "ride-tip"             = { uri = var.tip_model_uri, version = var.tip_model_version }
    "ride-duration-quick"  = { uri = var.quick_model_uri, version = var.quick_model_version }
    "ride-duration@shadow" = { uri = var.shadow_model_uri, version = var.shadow_model_version }
  }
  models   = { for name, model in merge(local.legacy_models, var.models) : name => model if model.uri != "" }
  no_model = { uri = "", version = "" }
  quick    = lookup(local.models, "ride-duration-quick", local.no_model)
  shadow   = lookup(local.models, "ride-duration@shadow", local.no_model)

  # The models the stream predicts, declared once for Python and Terraform alike
  # (rides/stream/models.json): each is a consumer on ride-events, one code path, and a field
  # in the archive's tables. Adding a model is an entry there and its location in var.models.
  model_specs = jsondecode(file("${path.module}/../rides/stream/models.json"))
  consumers = { for spec in local.model_specs : spec.key => {
    function_name    = spec.key == "duration" ? "${var.consumer_function_name}${local.suffix}" : "ride-${spec.key}-consumer${local.suffix}"
    model_name       = spec.model_name
    prediction_field = spec.prediction_field
    model_uri        = lookup(local.models, spec.model_name, local.no_model).uri
    model_version    = lookup(local.models, spec.model_name, local.no_model).version
    role             = "production"
  } }
  # The challenger (rides promote --as shadow): a second ride-duration version on the same events,
  # its predictions marked "role": "shadow" (the decision service ignores them, the evaluation
  # compares them). Its own function and mapping rather than a second model in the production
  # consumer: a slow or broken challenger can never delay or fail a production batch
  # (docs/design-notes.md has the costs). It starts on what arrives from its first apply on.
  shadow_consumers = local.shadow.uri == "" ? {} : {
    shadow = {
      function_name    = local.names.shadow_consumer
      model_name       = "ride-duration"
      prediction_field = "ride_duration"
      model_uri        = local.shadow.uri
      model_version    = local.shadow.version
      role             = "shadow"
    }
  }
  # Every function on ride-events that publishes predictions.
  stream_consumers = merge(local.consumers, local.shadow_consumers)

  # The event source mappings' batching and failure policy: one for every stream function (the
  # variables, whose defaults are rides/settings.py EventSourceSettings), and what each function
  # changes of it, in one table (rides/settings.py EVENT_SOURCE_OVERRIDES; tests/test_infra.py
  # holds both equal).
  event_source = {
    batch_size                         = var.batch_size
    maximum_batching_window_in_seconds = var.maximum_batching_window_in_seconds
    starting_position                  = var.starting_position
    parallelization_factor             = var.parallelization_factor
    bisect_batch_on_function_error     = var.bisect_batch_on_function_error
    maximum_retry_attempts             = var.maximum_retry_attempts
    maximum_record_age_in_seconds      = var.maximum_record_age_in_seconds
  }
  event_source_overrides = {
    consumer = {}
    # one writer per ride (rides/stream/decision/store.py); its own window
    decisions = {
      parallelization_factor             = 1
      maximum_batching_window_in_seconds = var.decision_batching_window_seconds
    }
    # big batches over a few seconds (a batch's sums are one transaction); one invocation per
    # shard (the shard's mark, rides/stream/evaluation/store.py)
    evaluation = {
      batch_size                         = 2000
      maximum_batching_window_in_seconds = 5
      parallelization_factor             = 1
    }
  }
  event_sources = { for function, changes in local.event_source_overrides : function => merge(local.event_source, changes) }
}

# The zip variant goes through S3: Lambda's API takes at most 50 MB zipped, and the package
# with its dependencies is ~62 MB. One key, versioned by the bucket: a new package is a new
# object version, which updates the functions (and publishes new versions of them).
resource "aws_s3_object" "lambda_zip" {
  #checkov:skip=CKV_AWS_186:The bucket's default encryption (SSE-KMS) applies to the object.
  count       = var.lambda_zip == null ? 0 : 1
  bucket      = module.model_bucket.name
  key         = "lambda/package.zip"
  source      = var.lambda_zip
  source_hash = filemd5(var.lambda_zip)
}

locals {
  zip_package = var.lambda_zip == null ? null : {
    s3_bucket         = aws_s3_object.lambda_zip[0].bucket
    s3_key            = aws_s3_object.lambda_zip[0].key
    s3_object_version = aws_s3_object.lambda_zip[0].version_id
    source_code_hash  = filebase64sha256(var.lambda_zip)
  }
}
