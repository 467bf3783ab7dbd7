# The scheduled batch scoring job: a Lambda (container image). With a database, an EventBridge
# rule runs it every few minutes on the rides table's new rows ({"from_db": true}); a second
# rule scores last month's TLC file once a month. Backfill: {"months": "2023-01:2023-06"}.

variable "function_name" {
  type        = string
  description = "Lambda function name."
}

variable "image_uri" {
  type        = string
  description = "Batch image (lambda_function/Dockerfile.batch) in ECR."
}

variable "schedule_expression" {
  type        = string
  description = "When to run (EventBridge cron or rate expression)."
  default     = "cron(0 6 2 * ? *)"
}

variable "from_db_schedule_expression" {
  type        = string
  description = "When to score the rides table's new rows (only with a database)."
  default     = "rate(10 minutes)"
}

variable "model_uri" {
  type        = string
  description = "S3 location of the MLflow model (MODEL_URI)."
}

variable "model_version" {
  type        = string
  description = "Registered version written into every row (MODEL_VERSION)."
}

variable "model_bucket_arn" {
  type        = string
  description = "Bucket holding the model artifacts."
}

variable "model_prefix" {
  type        = string
  description = "Key prefix the job may read models from."
  default     = "mlflow/"
}

variable "output_bucket" {
  type        = string
  description = "Bucket the predictions parquet goes to."
}

variable "output_prefix" {
  type        = string
  description = "Key prefix of the predictions parquet."
  default     = "predictions"
}

variable "database" {
  type = object({
    host       = string
    port       = string
    name       = string
    secret_arn = string
  })
  description = "The predictions database (../batch_database): its address and the secret with its credentials; null: parquet only."
  default     = null
}

variable "network" {
  type = object({
    subnet_ids         = list(string)
    security_group_ids = list(string)
  })
  description = "Private subnets and security group to run in (to reach the database); null: outside any VPC."
  default     = null
}

variable "memory_mb" {
  type        = number
  description = "Memory (MB); a month of green-taxi rides needs well under 1 GB."
  default     = 2048
}

variable "log_retention_days" {
  type        = number
  description = "Log group retention (days)."
  default     = 30
}

variable "reserved_concurrency" {
  type        = number
  description = "Reserved concurrency (1: one run at a time), or null for none. Runs at once are safe without it: the database path queues on its watermark row, parquet parts are written whole and upserts are keyed."
  default     = null
}

data "aws_partition" "current" {}

module "function" {
  source = "../lambda_function"

  function_name        = var.function_name
  image_uri            = var.image_uri
  memory_mb            = var.memory_mb
  timeout_seconds      = 900
  reserved_concurrency = var.reserved_concurrency
  log_retention_days   = var.log_retention_days
  network              = var.network
  # Exactly what lambda_function/scoring_handler.py and rides/batch/database.py read (tests/test_infra.py).
  environment = merge(
    {
      MODEL_URI          = var.model_uri
      MODEL_VERSION      = var.model_version
      PREDICTIONS_OUTPUT = "s3://${var.output_bucket}/${var.output_prefix}"
    },
    var.database == null ? {} : {
      RIDES_DATABASE_HOST       = var.database.host
      RIDES_DATABASE_PORT       = var.database.port
      RIDES_DATABASE_NAME       = var.database.name
      RIDES_DATABASE_SECRET_ARN = var.database.secret_arn
    },
  )
  policy_statements = concat(local.statements, local.secret_statements)
  # A monthly job has no traffic to shift gradually: a release moves its alias directly, and
  # the schedule runs whatever the alias serves.
}

locals {
  statements = [
    {
      sid       = "ReadModels"
      actions   = ["s3:GetObject"]
      resources = ["${var.model_bucket_arn}/${var.model_prefix}*"]
      s3_prefix = null
    },
    {
      # Resuming a crashed run reads the parts it already wrote; a rerun with a smaller batch
      # size removes the parts past its end.
      sid       = "ReadWritePredictions"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
      resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.output_bucket}/${var.output_prefix}/*"]
      s3_prefix = null
    },
    {
      sid       = "ListOwnOutputPrefix"
      actions   = ["s3:ListBucket"]
      resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.output_bucket}"]
      s3_prefix = "${var.output_prefix}/"
    },
    {
      sid       = "ListModelPrefix"
      actions   = ["s3:ListBucket"]
      resources = [var.model_bucket_arn]
      s3_prefix = var.model_prefix
    },
  ]
  # The database's user and password, read on each run (RDS rotates them).
  secret_statements = var.database == null ? [] : [
    {
      sid       = "ReadDatabaseSecret"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [var.database.secret_arn]
      s3_prefix = null
    },
  ]
}

module "schedule" {
  source = "../lambda_schedule"

  name                = "${var.function_name}-schedule"
  description         = "Score last month's rides."
  schedule_expression = var.schedule_expression
  function_name       = module.function.function_name
  alias_arn           = module.function.alias_arn
  alias_name          = module.function.alias_name
}

# Every few minutes: the rides that arrived since the watermark (rides.batch.incremental).
# The function's reserved concurrency of 1 keeps runs from overlapping; the watermark lock would
# keep them correct anyway.
module "from_db_schedule" {
  source = "../lambda_schedule"
  count  = var.database == null ? 0 : 1

  name                = "${var.function_name}-from-db"
  description         = "Score the rides table's new rows."
  schedule_expression = var.from_db_schedule_expression
  function_name       = module.function.function_name
  alias_arn           = module.function.alias_arn
  alias_name          = module.function.alias_name
  input               = jsonencode({ from_db = true })
}

output "release" {
  description = "What `rides release` needs to move the alias."
  value       = module.function.release
}

output "function_name" {
  description = "Invoke it for a backfill: aws lambda invoke --function-name ... --payload '{\"months\":\"2023-01:2023-06\"}'."
  value       = module.function.function_name
}

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
  from = module.release
  to   = module.function.module.release
}
