# The scheduled batch scoring job: a Lambda (container image) that an EventBridge rule runs
# once a month on the previous month. Backfill: invoke it with {"months": "2023-01:2023-06"}.

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

variable "database_url" {
  type        = string
  description = "SQLAlchemy URL of the predictions table (RIDES_DATABASE_URL); empty: parquet only."
  default     = ""
  sensitive   = true
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

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.function_name}-role"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_158:Logs hold counts and paths only; CloudWatch encrypts at rest by default.
  #checkov:skip=CKV_AWS_338:Retention is a per-environment variable (prod sets 365 days).
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
}

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "ReadModels"
    actions   = ["s3:GetObject"]
    resources = ["${var.model_bucket_arn}/${var.model_prefix}*"]
  }

  statement {
    # Resuming a crashed run reads the parts it already wrote.
    sid       = "ReadWritePredictions"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["arn:aws:s3:::${var.output_bucket}/${var.output_prefix}/*"]
  }

  statement {
    sid       = "ListOwnPrefixes"
    actions   = ["s3:ListBucket"]
    resources = ["arn:aws:s3:::${var.output_bucket}", var.model_bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.output_prefix}/*", "${var.model_prefix}*"]
    }
  }

  statement {
    sid       = "WriteOwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  statement {
    # X-Ray does not support resource-level permissions: "*" is the narrowest AWS allows.
    sid       = "WriteTraces"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "${var.function_name}-policy"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:Invoked by a schedule; a failed run is retried by EventBridge and resumes from its parts.
  #checkov:skip=CKV_AWS_117:Calls S3 and the TLC download site only; no VPC resources to reach.
  #checkov:skip=CKV_AWS_173:The database URL is marked sensitive in Terraform; use an IAM-authenticated URL in production.
  #checkov:skip=CKV_AWS_272:Code signing does not apply to container images.
  function_name                  = var.function_name
  role                           = aws_iam_role.this.arn
  package_type                   = "Image"
  image_uri                      = var.image_uri
  memory_size                    = var.memory_mb
  timeout                        = 900
  reserved_concurrent_executions = 1 # one run at a time: parts and upserts stay consistent
  publish                        = true

  environment {
    variables = {
      MODEL_URI          = var.model_uri
      MODEL_VERSION      = var.model_version
      PREDICTIONS_OUTPUT = "s3://${var.output_bucket}/${var.output_prefix}"
      RIDES_DATABASE_URL = var.database_url
    }
  }

  tracing_config {
    mode = "Active"
  }

  depends_on = [aws_cloudwatch_log_group.this, aws_iam_role_policy.this]
}

# A monthly job has no traffic to shift gradually: a release moves its alias directly, and the
# schedule runs whatever the alias serves.
module "release" {
  source = "../lambda_release"

  function_name    = aws_lambda_function.this.function_name
  function_version = aws_lambda_function.this.version
}

module "schedule" {
  source = "../lambda_schedule"

  name                = "${var.function_name}-schedule"
  description         = "Score last month's rides."
  schedule_expression = var.schedule_expression
  function_name       = aws_lambda_function.this.function_name
  alias_arn           = module.release.alias_arn
  alias_name          = module.release.alias_name
}

output "release" {
  description = "What `rides release` needs to move the alias."
  value       = module.release.release
}

output "function_name" {
  description = "Invoke it for a backfill: aws lambda invoke --function-name ... --payload '{\"months\":\"2023-01:2023-06\"}'."
  value       = aws_lambda_function.this.function_name
}
