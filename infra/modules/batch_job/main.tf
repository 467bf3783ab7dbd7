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

  dynamic "statement" {
    # The database's user and password, read on each run (RDS rotates them).
    for_each = var.database == null ? [] : [var.database.secret_arn]
    content {
      sid       = "ReadDatabaseSecret"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    # Lambda's network interfaces in the VPC; EC2 allows no narrower resource for these.
    for_each = var.network == null ? [] : [1]
    content {
      sid = "NetworkInterfaces"
      actions = [
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
      ]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "${var.function_name}-policy"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_116:Invoked by a schedule; a failed run is retried by EventBridge and resumes from its parts.
  #checkov:skip=CKV_AWS_117:In the database's VPC whenever there is a database (var.network); without one it calls S3 and the TLC site only.
  #checkov:skip=CKV_AWS_173:The environment holds an address and a secret's ARN, never a credential.
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
    # Exactly what lambda_function/scoring_handler.py and rides/database.py read (tests/test_infra.py).
    variables = merge(
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
  }

  dynamic "vpc_config" {
    for_each = var.network == null ? [] : [var.network]
    content {
      subnet_ids         = vpc_config.value.subnet_ids
      security_group_ids = vpc_config.value.security_group_ids
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
