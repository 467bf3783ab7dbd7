# One apply per environment:
#   terraform init -backend-config=backend/stg.hcl
#   terraform apply -var-file=vars/stg.tfvars -var image_tag=<sha> [-var model_uri=... -var model_version=...]

module "input_stream" {
  source          = "./modules/kinesis_stream"
  kms_key_id      = local.stream_kms_key
  name            = local.names.input_stream
  shard_count     = var.input_shard_count
  retention_hours = var.stream_retention_hours
}

module "predictions_stream" {
  source          = "./modules/kinesis_stream"
  kms_key_id      = local.stream_kms_key
  name            = local.names.predictions_stream
  shard_count     = local.predictions_shard_count
  retention_hours = var.stream_retention_hours
}

# Ground truth: producers put a ride-completed event here when a ride ends. Its own stream, not
# ride-events: the consumers would otherwise be invoked for (and skip) as many records again.
module "completions_stream" {
  source          = "./modules/kinesis_stream"
  kms_key_id      = local.stream_kms_key
  name            = local.names.completions_stream
  shard_count     = var.input_shard_count
  retention_hours = var.stream_retention_hours
}

module "decisions_stream" {
  source          = "./modules/kinesis_stream"
  kms_key_id      = local.stream_kms_key
  name            = local.names.decisions_stream
  shard_count     = 1
  retention_hours = var.stream_retention_hours
}

module "model_bucket" {
  source = "./modules/model_bucket"
  name   = local.model_bucket_name
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

# MLflow's tracking server and registry for this environment. Prod has none of its own: in the
# same account it shares staging's (and reads staging's bucket); in an account of its own it
# serves the versions staging exported, recorded in the deploy record.
module "mlflow" {
  source = "./modules/mlflow"
  count  = var.mlflow_tracking_server ? 1 : 0

  name            = local.names.mlflow_tracking_server
  artifact_bucket = module.model_bucket.name
}

module "ecr" {
  source          = "./modules/ecr_repository"
  name            = local.names.ecr_repository
  reader_accounts = var.image_reader_accounts
}

module "dead_letter_queue" {
  source = "./modules/queue"
  name   = local.names.dead_letter_queue
}

module "failed_batches_queue" {
  source = "./modules/queue"
  name   = local.names.failed_batches_queue
}

# Rides the decision service decided `review`, with the decision and its flags, for a person
# to act on (`rides review`); an alarm when one waits longer than review_max_age_seconds.
module "review_queue" {
  source = "./modules/queue"
  name   = local.names.review_queue
}

module "evaluations_table" {
  source = "./modules/evaluations_table"
  name   = local.names.evaluations_table
}

module "decisions_table" {
  source = "./modules/decisions_table"
  name   = local.names.decisions_table
}

# The monthly batch scoring job, once its image is pushed and a model promoted.
module "batch_job" {
  source = "./modules/batch_job"
  count  = var.batch_image_tag != null && var.model_uri != "" ? 1 : 0

  function_name        = local.names.batch_job
  image_uri            = local.image_of[coalesce(var.batch_image_tag, "none")]
  model_uri            = var.model_uri
  model_version        = var.model_version
  model_bucket_arn     = local.model_bucket_arn
  output_bucket        = module.model_bucket.name
  reserved_concurrency = local.reserve ? 1 : null
  database             = one(module.batch_database[*].connection)
  network              = one(module.batch_database[*].job_network)
  log_retention_days   = var.log_retention_days
}

# Where the batch job upserts its predictions (and, for the combined mode, where rides are read).
module "batch_database" {
  source = "./modules/batch_database"
  count  = var.batch_database ? 1 : 0

  name                = local.names.batch_database
  deletion_protection = var.environment == "prod"
  nat_gateway         = var.batch_nat_gateway
}

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

  # The consumers on ride-events: one code path, one entry each. A model is declared in
  # rides/stream/consumers.py (MODELS); tests/test_infra.py keeps this map equal to it, and a
  # new model needs its entry here and its model_uri/model_version variables.
  consumers = {
    duration = {
      function_name    = "${var.consumer_function_name}${local.suffix}"
      model_name       = "ride-duration"
      prediction_field = "ride_duration"
      model_uri        = var.model_uri
      model_version    = var.model_version
      role             = "production"
    }
    fare = {
      function_name    = "ride-fare-consumer${local.suffix}"
      model_name       = "ride-fare"
      prediction_field = "fare_amount"
      model_uri        = var.fare_model_uri
      model_version    = var.fare_model_version
      role             = "production"
    }
    tip = {
      function_name    = "ride-tip-consumer${local.suffix}"
      model_name       = "ride-tip"
      prediction_field = "tip_amount"
      model_uri        = var.tip_model_uri
      model_version    = var.tip_model_version
      role             = "production"
    }
  }
  # The challenger (rides promote --as shadow): a second ride-duration version on the same events,
  # its predictions marked "role": "shadow" (the decision service ignores them, the evaluation
  # compares them). Its own function and mapping rather than a second model in the production
  # consumer: a slow or broken challenger can never delay or fail a production batch
  # (docs/design-notes.md has the costs). It starts on what arrives from its first apply on.
  shadow_consumers = var.shadow_model_uri == "" ? {} : {
    shadow = {
      function_name    = local.names.shadow_consumer
      model_name       = "ride-duration"
      prediction_field = "ride_duration"
      model_uri        = var.shadow_model_uri
      model_version    = var.shadow_model_version
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
    DRIFT_REFERENCE_URI     = var.model_uri
    DRIFT_MODEL             = "ride-duration"
    # a ride is counted once every consumer and the challenger (if one runs) has predicted it,
    # or after 15 min
    EVALUATED_MODELS             = join(",", [for consumer in values(local.consumers) : consumer.model_name])
    SHADOW_MODELS                = var.shadow_model_uri == "" ? "" : "ride-duration"
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

# The archive: predictions, decisions and completions as parquet in the model bucket
# (archive/<stream>/dt=/hour=), so evaluation and drift can look back past the retention.
resource "aws_glue_catalog_database" "archive" {
  count = var.stream_archive ? 1 : 0
  name  = replace(local.names.archive, "-", "_")
}

module "stream_archive" {
  source   = "./modules/stream_archive"
  for_each = var.stream_archive ? local.archived_streams : {}

  name          = "${local.names.archive}-${each.key}"
  stream_arn    = each.value.arn
  bucket_arn    = module.model_bucket.arn
  prefix        = "archive/${each.value.name}"
  glue_database = aws_glue_catalog_database.archive[0].name
  columns       = local.archive_columns[each.key]
  kms_key_arn   = var.stream_kms_key_arn
}

locals {
  archived_streams = {
    predictions = { arn = module.predictions_stream.arn, name = module.predictions_stream.name }
    decisions   = { arn = module.decisions_stream.arn, name = module.decisions_stream.name }
    completions = { arn = module.completions_stream.arn, name = module.completions_stream.name }
  }
  # rides/operate/archive.py COLUMNS, the same names and Glue types (tests/test_infra.py checks).
  archive_columns = {
    predictions = [
      { name = "model", type = "string" },
      { name = "version", type = "string" },
      { name = "role", type = "string" },
      { name = "prediction", type = "struct<ride_id:string,ride_duration:double,fare_amount:double,tip_amount:double>" },
      { name = "source", type = "struct<shard_id:string,sequence_number:string,approximate_arrival_timestamp:double,sub_sequence_number:int>" },
    ]
    decisions = [
      { name = "decision_id", type = "string" },
      { name = "ride_id", type = "string" },
      { name = "decision", type = "string" },
      { name = "flags", type = "array<string>" },
      { name = "complete", type = "boolean" },
      { name = "reason", type = "string" },
      { name = "decided_at", type = "double" },
    ]
    completions = [
      { name = "type", type = "string" },
      { name = "version", type = "int" },
      { name = "ride_id", type = "string" },
      { name = "lpep_dropoff_datetime", type = "string" },
      { name = "duration_minutes", type = "double" },
      { name = "fare_amount", type = "double" },
      { name = "tip_amount", type = "double" },
    ]
  }
}

module "decision_sweep" {
  source = "./modules/lambda_schedule"

  name                = local.names.decision_sweep
  description         = "Decide rides whose predictions stopped coming."
  schedule_expression = "rate(1 minute)"
  function_name       = module.decision_service.function_name
  alias_arn           = module.decision_service.alias_arn
  alias_name          = module.decision_service.alias_name
  input               = jsonencode({ sweep = true })
}

module "evaluation_sweep" {
  source = "./modules/lambda_schedule"

  name                = local.names.evaluation_sweep
  description         = "Join the completions that came before their ride's decision."
  schedule_expression = "rate(1 minute)"
  function_name       = module.evaluation.function_name
  alias_arn           = module.evaluation.alias_arn
  alias_name          = module.evaluation.alias_name
  input               = jsonencode({ sweep = true })
}

# What an operator must act on: records waiting in a queue (dead letters with their reason;
# batches the event source mapping gave up on, which `rides redrive` replays while the stream
# holds them) and a consumer whose model cannot serve (its ModelFaults metric, EMF with the
# dimensions service + model, is 1 for each batch it could not predict).
locals {
  operator_alarms = merge(
    {
      for key, queue in {
        dead-letters = {
          name = module.dead_letter_queue.name
          what = "Malformed records are waiting in the dead-letter queue (rides dead-letters lists them)."
        }
        failed-batches = {
          name = module.failed_batches_queue.name
          what = "The event source mapping gave up on batches: replay them with rides redrive while the stream still holds them."
        }
        } : key => {
        namespace  = "AWS/SQS"
        metric     = "ApproximateNumberOfMessagesVisible"
        dimensions = { QueueName = queue.name }
        statistic  = "Maximum"
        period     = 300
        threshold  = 0
        what       = queue.what
      }
    },
    {
      feature-drift = {
        namespace  = "rides"
        metric     = "MaxFeatureDrift"
        dimensions = { service = local.names.evaluation }
        statistic  = "Maximum"
        period     = 3600
        threshold  = var.drift_alarm_psi
        what       = "An input feature's distribution this hour moved from the training data's (PSI above ${var.drift_alarm_psi}): rides evaluate shows which."
      }
      review-waiting = {
        namespace  = "AWS/SQS"
        metric     = "ApproximateAgeOfOldestMessage"
        dimensions = { QueueName = module.review_queue.name }
        statistic  = "Maximum"
        period     = 300
        threshold  = var.review_max_age_seconds
        what       = "A ride decided `review` has waited longer than ${var.review_max_age_seconds} s for a person (rides review lists them)."
      }
    },
    {
      for key, consumer in local.stream_consumers : "${consumer.function_name}-model-faults" => {
        namespace  = "rides"
        metric     = "ModelFaults"
        dimensions = { service = consumer.function_name, model = consumer.model_name }
        statistic  = "Sum"
        period     = 60
        threshold  = 0
        what       = "${consumer.function_name} cannot serve its model ${consumer.model_name}: batches are retried, not predicted."
      }
    },
  )
}

resource "aws_cloudwatch_metric_alarm" "operator" {
  for_each            = local.operator_alarms
  alarm_name          = "rides-${var.environment}-${each.key}"
  alarm_description   = each.value.what
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  dimensions          = each.value.dimensions
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = 1
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}

# Where every alarm of this environment notifies (subscribe on-call to it, or set alarm_email).
# Encrypted with a key of our own whose policy lets CloudWatch use it: under the AWS-managed SNS
# key (alias/aws/sns) CloudWatch's publishes fail, since that key's policy cannot be changed to
# grant cloudwatch.amazonaws.com, and no alarm e-mail would ever arrive.
resource "aws_sns_topic" "alarms" {
  name              = "rides-alarms${local.suffix}"
  kms_master_key_id = aws_kms_key.alarms.arn
}

resource "aws_kms_key" "alarms" {
  description             = "rides alarm notifications (${var.environment}): CloudWatch publishes with it"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.alarms_key.json
}

resource "aws_kms_alias" "alarms" {
  name          = "alias/rides-alarms${local.suffix}"
  target_key_id = aws_kms_key.alarms.key_id
}

data "aws_iam_policy_document" "alarms_key" {
  #checkov:skip=CKV_AWS_109:A key policy's resource is the key itself ("*"); the account administers its own key.
  #checkov:skip=CKV_AWS_111:A key policy's resource is the key itself ("*"); the account administers its own key.
  #checkov:skip=CKV_AWS_356:A key policy's resource is the key itself ("*").
  statement {
    sid       = "AccountAdministersTheKey"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count     = var.alarm_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# What a producer's role attaches: put ride events and their completions on this environment's
# two input streams, and nothing else (no reads, no other stream). ListShards: rides.producer
# groups KPL-aggregated rides by the shard each one's own key hashes to (tests/test_iam_calls.py
# records its calls).
resource "aws_iam_policy" "producer" {
  name        = "rides-producer${local.suffix}"
  description = "Put rides on ${local.names.input_stream} and completions on ${local.names.completions_stream}, nothing else."
  policy      = data.aws_iam_policy_document.producer.json
}

data "aws_iam_policy_document" "producer" {
  statement {
    sid       = "PutRidesAndCompletions"
    actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary", "kinesis:ListShards"]
    resources = [module.input_stream.arn, module.completions_stream.arn]
  }
  dynamic "statement" {
    for_each = local.stream_key_writes
    content {
      sid       = statement.value.sid
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }
}

# The web service (rides serve) as a Lambda behind an IAM-authenticated function URL, once its
# image is pushed (web-<tag>) and the duration model promoted.
module "web_service" {
  source = "./modules/web_service"
  count  = var.web_service && local.image_uri != null && var.quick_model_uri != "" ? 1 : 0

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
    MODEL_URI             = var.quick_model_uri
    MODEL_VERSION         = var.quick_model_version
    MODEL_NAME            = "ride-duration-quick"
    RIDES_INPUT_STREAM    = local.names.input_stream
    RIDES_DECISIONS_TABLE = local.names.decisions_table
  }
}

# The rollout: each apply publishes a version of every function; scripts/deploy.sh then runs
# `rides release`, which shifts each `live` alias to it through CodeDeploy (canary in prod,
# all at once in staging), stopped and rolled back by the function's alarms. With
# deployment_config_name = null (the local stack, which has no CodeDeploy) the release moves the
# aliases directly.
locals {
  rollout = {
    deployment_config_name = var.deployment_config_name
    codedeploy_app_name    = one(aws_codedeploy_app.this[*].name)
    codedeploy_role_arn    = one(aws_iam_role.codedeploy[*].arn)
  }
}

resource "aws_codedeploy_app" "this" {
  count            = var.deployment_config_name == null ? 0 : 1
  name             = "rides${local.suffix}"
  compute_platform = "Lambda"
}

data "aws_iam_policy_document" "codedeploy_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["codedeploy.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "codedeploy" {
  count              = var.deployment_config_name == null ? 0 : 1
  name               = "rides-codedeploy${local.suffix}"
  assume_role_policy = data.aws_iam_policy_document.codedeploy_assume.json
}

resource "aws_iam_role_policy_attachment" "codedeploy" {
  count = var.deployment_config_name == null ? 0 : 1
  role  = aws_iam_role.codedeploy[0].name
  # Read alarms, get and update aliases: nothing else (no SNS, no S3 beyond CodeDeploy/ keys).
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited"
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
