# What runs on a schedule (the sweeps) and what tells an operator to act (alarms, SNS).

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
