variable "environment" {
  type        = string
  description = "Environment name (stg, prod, or another short one); every resource name carries it."
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.environment))
    error_message = "environment must be 2-10 lowercase letters or digits, starting with a letter."
  }
}

variable "plain_names" {
  type        = bool
  description = "Name resources without the environment suffix (ride-events instead of ride-events-stg): the local stack's names. Off everywhere environments may share an account."
  default     = false
}

variable "aws_region" {
  type        = string
  description = "AWS region for every resource of this environment. No default and in no tfvars: scripts/deploy.sh passes AWS_REGION (the CLI's and the pipeline's), so one setting says where everything goes."
}

variable "name_prefix" {
  type        = string
  description = "First part of the names that are global (S3 buckets): <prefix>-models-<env>-<account id>-<region>. Change it when the account already holds buckets by these names."
  default     = "rides"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name_prefix))
    error_message = "name_prefix must be 2-20 lowercase letters, digits or dashes, starting with a letter."
  }
}

# -- names: the base names; each environment adds its suffix (local.names). With an empty
# suffix they are what `rides stack up` creates locally. ------------------------------------
variable "input_stream_name" {
  type        = string
  description = "Kinesis stream producers put ride events on."
  default     = "ride-events"
}

variable "predictions_stream_name" {
  type        = string
  description = "Kinesis stream the consumers publish predictions to."
  default     = "ride-predictions"
}

variable "decisions_stream_name" {
  type        = string
  description = "Kinesis stream the decision service publishes decisions to."
  default     = "ride-decisions"
}

variable "dead_letter_queue_name" {
  type        = string
  description = "SQS queue for records that can never be processed (with their reason)."
  default     = "ride-events-dlq"
}

variable "failed_batches_queue_name" {
  type        = string
  description = "SQS on-failure destination of the event source mappings (batches out of retries or too old)."
  default     = "ride-events-failed-batches"
}

variable "completions_stream_name" {
  type        = string
  description = "Kinesis stream of ride-completed events (ground truth)."
  default     = "ride-completions"
}

variable "evaluations_table_name" {
  type        = string
  description = "DynamoDB table of live evaluation (predictions joined with outcomes, drift counts)."
  default     = "ride-evaluations"
}

variable "evaluation_window_hours" {
  type        = number
  description = "How late an outcome may come and still be joined with its predictions."
  default     = 48
}

variable "drift_alarm_psi" {
  type        = number
  description = "Alarm when an input feature's population stability index this hour exceeds this."
  default     = 0.25
}

variable "shadow_model_uri" {
  type        = string
  description = "Deprecated: models[\"ride-duration@shadow\"].uri."
  default     = ""
}

variable "shadow_model_version" {
  type        = string
  description = "Deprecated: models[\"ride-duration@shadow\"].version."
  default     = ""
}

variable "stream_archive" {
  type        = bool
  description = "Archive predictions, decisions and completions to the model bucket as parquet (Firehose + Glue; off for emulators without them)."
  default     = true
}

variable "review_queue_name" {
  type        = string
  description = "SQS queue of rides decided `review` (the decision and its flags), for a person."
  default     = "ride-review"
}

variable "review_max_age_seconds" {
  type        = number
  description = "Alarm when a ride has waited this long in the review queue."
  default     = 3600
}

variable "decisions_table_name" {
  type        = string
  description = "DynamoDB table where the decision service gathers predictions per ride."
  default     = "ride-decisions"
}

variable "model_bucket_name" {
  type        = string
  description = "S3 bucket for MLflow artifacts (models under mlflow/). Null (the default): <name_prefix>-models-<env>-<account id>-<region>, unique without a choice (bucket names are global)."
  default     = null
}

variable "model_artifact_bucket" {
  type        = string
  description = "Bucket the MLflow registry's artifacts live in, when not this environment's own (one MLflow for both environments). Prefer model_artifact_environment."
  default     = null
}

variable "model_artifact_environment" {
  type        = string
  description = "The environment whose model bucket (in this account and region, by its derived name) holds the registry's artifacts, when not this one's: prod in staging's account reads stg's."
  default     = null
}

variable "consumer_function_name" {
  type        = string
  description = "Name of the ride-duration consumer Lambda."
  default     = "ride-duration-consumer"
}

variable "ecr_repository_name" {
  type        = string
  description = "ECR repository of the consumer image."
  default     = "ride-duration-consumer"
}

# -- streams ------------------------------------------------------------------------------------
variable "input_shard_count" {
  type        = number
  description = "Shards of the input stream; null for on-demand capacity."
  default     = 2
}

variable "predictions_shard_count" {
  type        = number
  description = "Shards of the predictions stream; null (the default) sizes it from the consumers: input shards x consumers, on-demand when the input is."
  default     = null
}

variable "stream_retention_hours" {
  type        = number
  description = "How long records stay on the streams (24-8760 hours)."
  default     = 24
}

# -- the consumer -------------------------------------------------------------------------------
variable "image_tag" {
  type        = string
  description = "Tag of the consumer image in ECR (the CD workflow passes the commit SHA)."
  default     = null
}

variable "image_digests" {
  type        = map(string)
  description = "Image tag → its digest (sha256:...), as scripts/deploy.sh records them: the functions then run exactly that image (repository@digest), which is how prod runs the image staging tested. Without an entry, a function runs repository:tag."
  default     = {}
}

variable "batch_image_tag" {
  type        = string
  description = "Tag of the batch scoring image in ECR; null: no scheduled batch job."
  default     = null
}

variable "batch_database" {
  type        = bool
  description = "Provision the batch job's Aurora Serverless v2 PostgreSQL and its VPC (off for emulators without RDS)."
  default     = true
}

variable "batch_nat_gateway" {
  type        = bool
  description = "Give the batch job internet access through one NAT gateway (it downloads the public TLC files)."
  default     = true
}

variable "models" {
  type = map(object({
    uri     = string
    version = optional(string, "")
  }))
  description = "What each model serves, by registered name: the models of rides/stream/models.json (ride-duration, ride-fare, ride-tip), ride-duration-quick (the web service) and ride-duration@shadow (the challenger, rides promote --as shadow). Each is its MLflow artifact location (s3://..., what `rides promote` prints) and registered version; scripts/deploy.sh fills it from the registry. A model without one keeps its consumer's mapping disabled; no quick model, no web service; no shadow, no shadow consumer."
  default     = {}
}

variable "model_uri" {
  type        = string
  description = "Deprecated: models[\"ride-duration\"].uri. S3 location of the ride-duration model."
  default     = ""
}

variable "fare_model_uri" {
  type        = string
  description = "Deprecated: models[\"ride-fare\"].uri."
  default     = ""
}

variable "fare_model_version" {
  type        = string
  description = "Deprecated: models[\"ride-fare\"].version."
  default     = ""
}

variable "tip_model_uri" {
  type        = string
  description = "Deprecated: models[\"ride-tip\"].uri."
  default     = ""
}

variable "tip_model_version" {
  type        = string
  description = "Deprecated: models[\"ride-tip\"].version."
  default     = ""
}

variable "quick_model_uri" {
  type        = string
  description = "Deprecated: models[\"ride-duration-quick\"].uri."
  default     = ""
}

variable "quick_model_version" {
  type        = string
  description = "Deprecated: models[\"ride-duration-quick\"].version."
  default     = ""
}

variable "web_api_keys" {
  type = map(object({
    sha256 = string
    scopes = list(string)
  }))
  description = "API keys of the web service's clients, by name: the SHA-256 of each key and what it may do (predict, stream, read); `rides api-key NAME` makes one. Empty: the function URL's IAM auth alone."
  default     = {}
}

variable "decision_timeout_seconds" {
  type        = number
  description = "How long the decision service waits for a ride's predictions before deciding with what it has."
  default     = 60
}

variable "decision_rules_json" {
  type        = string
  description = "Decision rules as JSON (DECISION_RULES); empty: the defaults in rides/stream/decision/rules.py."
  default     = ""
}

variable "model_version" {
  type        = string
  description = "Deprecated: models[\"ride-duration\"].version."
  default     = ""
}

variable "consumer_memory_mb" {
  type        = number
  description = "Memory of the consumer Lambda (MB); CPU scales with it."
  default     = 1024
}

variable "consumer_timeout_seconds" {
  type        = number
  description = "Timeout of the consumer Lambda (seconds)."
  default     = 60
}

variable "reserve_concurrency" {
  type        = bool
  description = "Reserve Lambda concurrency per function (consumer_reserved_concurrency each stream consumer, 5 the decision service and the evaluation, web_reserved_concurrency the web service, 1 the batch job). Off by default: Lambda keeps 100 of an account's concurrency unreserved, and a new account's quota (often 10 until raised) refuses any reservation. On, the sum must fit: aws lambda get-account-settings."
  default     = false
}

variable "consumer_reserved_concurrency" {
  type        = number
  description = "With reserve_concurrency: reserved concurrency of each stream consumer (at least shards x parallelization factor)."
  default     = 10
}

variable "publish_concurrency" {
  type        = number
  description = "Parallel PutRecords calls per batch in the consumer."
  default     = 4
}

variable "log_retention_days" {
  type        = number
  description = "Retention of the consumer's CloudWatch log group."
  default     = 30
}

# -- event source mapping: defaults are rides/settings.py's (tests hold them together) ---------------
variable "batch_size" {
  type        = number
  description = "Records per invocation (1-10000)."
  default     = 500
}

variable "maximum_batching_window_in_seconds" {
  type        = number
  description = "How long to gather records before invoking (0-300 s)."
  default     = 1
}

variable "decision_batching_window_seconds" {
  type        = number
  description = "How long the decision service's mapping gathers predictions before invoking (0-300 s): longer puts more of a ride's predictions in one batch (one write instead of two), shorter decides sooner (README, \"What a ride costs\")."
  default     = 1

  validation {
    condition     = var.decision_batching_window_seconds >= 0 && var.decision_batching_window_seconds <= 300 && floor(var.decision_batching_window_seconds) == var.decision_batching_window_seconds
    error_message = "decision_batching_window_seconds must be a whole number of seconds, 0-300."
  }
}

variable "starting_position" {
  type        = string
  description = "Where a new mapping starts reading: TRIM_HORIZON or LATEST."
  default     = "TRIM_HORIZON"
}

variable "parallelization_factor" {
  type        = number
  description = "Concurrent batches per shard (1-10); per-ride order holds because a ride id always maps to one batch lane."
  default     = 1
}

variable "bisect_batch_on_function_error" {
  type        = bool
  description = "Split a failing batch in two and retry each half."
  default     = true
}

variable "maximum_retry_attempts" {
  type        = number
  description = "Retries of a failing batch before it goes to the on-failure destination (-1: until it expires)."
  default     = 5
}

variable "maximum_record_age_in_seconds" {
  type        = number
  description = "Records older than this go to the on-failure destination (-1: the stream's retention)."
  default     = 3600
}

# -- alarms -------------------------------------------------------------------------------------
variable "alarm_topic_arn" {
  type        = string
  description = "An existing SNS topic for alarm notifications; null (the default): this environment's own topic, rides-alarms-<env>."
  default     = null
}

variable "alarm_email" {
  type        = string
  description = "Subscribe this address to the environment's alarm topic (the subscription must be confirmed from the email); null: no subscription."
  default     = null
}
variable "iterator_age_alarm_ms" {
  type        = number
  description = "Alarm when the consumer falls this far behind the stream (milliseconds)."
  default     = 60000
}

variable "enhanced_fan_out" {
  type        = bool
  description = <<-EOT
    Give each consumer of ride-events its own read pipe (enhanced fan-out). Polling mappings share
    a shard's 5 GetRecords/s and 2 MB/s: the three consumers take 3 of the 5 (4 with a shadow
    model), and AWS gives ~200 ms propagation with one polling reader, ~1,000 ms with five; with
    enhanced fan-out records are pushed in ~70 ms and readers never throttle each other. It costs
    per consumer-shard-hour plus per GB read (list prices in N. Virginia when written: $0.015 and
    $0.013; see the Kinesis pricing page): 3 consumers x 4 shards x 730 h = ~$131/month for
    prod. Off for staging (2 shards, no shadow), on for prod.
  EOT
  default     = false
}

variable "web_service" {
  type        = bool
  description = "Deploy the web service (a Lambda behind an IAM-authenticated function URL)."
  default     = true
}

variable "web_reserved_concurrency" {
  type        = number
  description = "With reserve_concurrency: concurrent web requests at most; beyond it the function URL answers 429 (the throttle)."
  default     = 20
}

variable "deployment_config_name" {
  type        = string
  description = "How a release shifts traffic to a new version: a CodeDeploy Lambda config (prod: CodeDeployDefault.LambdaCanary10Percent5Minutes), or null to move the aliases directly (the local stack has no CodeDeploy)."
  default     = "CodeDeployDefault.LambdaAllAtOnce"
}

variable "mlflow_tracking_server" {
  type        = bool
  description = "Give this environment a managed MLflow tracking server (SageMaker); false: it uses another environment's."
  default     = true
}

variable "lambda_zip" {
  type        = string
  description = "Deploy the consumers and the decision service from this zip (python -m rides.packaging build/lambda.zip) instead of the container image; null: the image (the default on AWS)."
  default     = null
}

variable "stream_kms_key_arn" {
  type        = string
  description = "A customer-managed KMS key for every stream of this environment; null: the AWS-managed key (alias/aws/kinesis). With a key, every role that writes a stream gets kms:GenerateDataKey on it and every reader kms:Decrypt (the AWS-managed key needs neither grant); the key's policy must let the account's IAM decide."
  default     = null
}

variable "image_reader_accounts" {
  type        = list(string)
  description = "Accounts that may pull this environment's images: staging's lists prod's account when prod has one of its own (prod copies staging's images by digest)."
  default     = []
}

variable "publish_aggregated" {
  type        = bool
  description = "Consumers and the decision service put their records on ride-predictions and ride-decisions KPL-aggregated (docs/contracts.md): a PUT payload unit per 25 KB instead of one per record, and Firehose's 5 KB minimum per aggregate. Every reader here deaggregates; a reader of your own must too (false keeps one record per prediction)."
  default     = true
}
