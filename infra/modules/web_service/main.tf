# The web service on AWS, serverless like the rest: its container image as a Lambda (the AWS
# Lambda Web Adapter in the image runs the same uvicorn server as `rides serve`), reached
# through a function URL that only signed (IAM) requests may call, throttled by reserved
# concurrency, with alarms on errors and throttles. Its role may put ride events on the input
# stream (the consent mode) and read the decisions table, nothing else.

module "function" {
  source = "../lambda_function"

  function_name        = var.function_name
  image_uri            = var.image_uri
  memory_mb            = var.memory_mb
  timeout_seconds      = 10
  reserved_concurrency = var.reserved_concurrency
  log_retention_days   = var.log_retention_days
  environment = merge(var.environment, {
    # The Lambda Web Adapter forwards each request to the server on PORT once /health answers.
    PORT                         = "8000"
    AWS_LWA_READINESS_CHECK_PATH = "/health"
    RIDES_HOME                   = "/tmp/rides"
  })
  policy_statements = [
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
  alarms = {
    errors    = { metric = "Errors", statistic = "Sum", period = 300, periods = 1, threshold = 0, what = "failing requests" }
    throttles = { metric = "Throttles", statistic = "Sum", period = 300, periods = 1, threshold = 0, what = "throttling requests (reserved concurrency reached)" }
  }
  alarm_name_prefix = var.alarm_name_prefix
  alarm_topic_arn   = var.alarm_topic_arn
  rollout           = var.rollout
}

# Only requests signed by a principal allowed lambda:InvokeFunctionUrl reach the service:
# nobody on the internet can put rides on the stream or read another ride's predictions.
# The URL serves the `live` alias, which a release moves (canary through CodeDeploy in prod).
resource "aws_lambda_function_url" "this" {
  function_name      = module.function.function_name
  qualifier          = module.function.alias_name
  authorization_type = "AWS_IAM"
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
