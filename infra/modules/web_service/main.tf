# The web service on AWS, serverless like the rest: its container image as a Lambda (the AWS
# Lambda Web Adapter in the image runs the same uvicorn server as `rides serve`), reached
# through a function URL that only signed (IAM) requests may call, throttled by reserved
# concurrency, with alarms on errors and throttles. Its role may put ride events on the input
# stream (the consent mode), read the decisions table and its API keys, nothing else.
#
# Authentication: IAM on the URL, always; with var.api_keys also API keys with scopes
# (rides.web.auth), whose hashes live in a Secrets Manager secret this module writes.
# Responses stream (RESPONSE_STREAM), so server-sent events arrive as they happen; the timeout
# leaves room for the longest wait a request may ask for (rides.web.app.MAX_WAIT_SECONDS = 25 s).

module "function" {
  source = "../lambda_function"

  function_name        = var.function_name
  image_uri            = var.image_uri
  memory_mb            = var.memory_mb
  timeout_seconds      = 30
  reserved_concurrency = var.reserved_concurrency
  log_retention_days   = var.log_retention_days
  environment = merge(var.environment, {
    # The Lambda Web Adapter forwards each request to the server on PORT once /health answers.
    PORT                         = "8000"
    AWS_LWA_READINESS_CHECK_PATH = "/health"
    AWS_LWA_INVOKE_MODE          = "response_stream"
    RIDES_HOME                   = "/tmp/rides"
    }, length(var.api_keys) == 0 ? {
    RIDES_WEB_AUTH = "none" # the function URL's IAM auth is the authentication
    } : {
    RIDES_API_KEYS_SECRET_ARN = aws_secretsmanager_secret.api_keys[0].arn
  })
  policy_statements = concat(local.statements, local.api_key_statements, var.policy_statements)
  alarms = {
    errors    = { metric = "Errors", statistic = "Sum", period = 300, periods = 1, threshold = 0, what = "failing requests" }
    throttles = { metric = "Throttles", statistic = "Sum", period = 300, periods = 1, threshold = 0, what = "throttling requests (reserved concurrency reached)" }
  }
  alarm_name_prefix = var.alarm_name_prefix
  alarm_topic_arn   = var.alarm_topic_arn
  rollout           = var.rollout
}

locals {
  statements = [
    {
      sid       = "PutRideEventsWithConsent"
      actions   = ["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"]
      resources = [var.input_stream_arn]
    },
    {
      sid       = "ReadStreamedPredictions"
      actions   = ["dynamodb:GetItem"]
      resources = [var.decisions_table_arn]
    },
    {
      sid       = "ReadModels"
      actions   = ["s3:GetObject"]
      resources = ["${var.model_bucket_arn}/mlflow/*"]
    },
  ]
  # The secret with the API keys' hashes (rides.web.auth reads it at start).
  api_key_statement = {
    sid       = "ReadApiKeys"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [one(aws_secretsmanager_secret.api_keys[*].arn)]
  }
  api_key_statements = length(var.api_keys) == 0 ? [] : [local.api_key_statement]
}

# Only requests signed by a principal allowed lambda:InvokeFunctionUrl reach the service:
# nobody on the internet can put rides on the stream or read another ride's predictions.
# The URL serves the `live` alias, which a release moves (canary through CodeDeploy in prod).
resource "aws_lambda_function_url" "this" {
  function_name      = module.function.function_name
  qualifier          = module.function.alias_name
  authorization_type = "AWS_IAM"
  invoke_mode        = "RESPONSE_STREAM"
}

# Hashes, not keys: a key is shown once, by `rides api-key`, to whoever gives it to the client.
resource "aws_secretsmanager_secret" "api_keys" {
  #checkov:skip=CKV_AWS_149:It holds SHA-256 hashes of keys, not keys: the AWS-managed key is enough.
  #checkov:skip=CKV2_AWS_57:Keys are rotated by adding a new key's hash and removing the old one in web_api_keys, not by a rotation Lambda.
  count                   = length(var.api_keys) == 0 ? 0 : 1
  name                    = "${var.function_name}-api-keys"
  description             = "API keys of the web service's clients: name -> {sha256, scopes} (rides.web.auth)."
  recovery_window_in_days = 0
}

resource "aws_secretsmanager_secret_version" "api_keys" {
  count         = length(var.api_keys) == 0 ? 0 : 1
  secret_id     = aws_secretsmanager_secret.api_keys[0].id
  secret_string = jsonencode(var.api_keys)
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
  from = aws_cloudwatch_metric_alarm.this
  to   = module.function.aws_cloudwatch_metric_alarm.this
}

moved {
  from = module.release
  to   = module.function.module.release
}
