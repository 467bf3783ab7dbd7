locals {
  alarm_actions = var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn]
  alarms = {
    iterator-age = {
      metric    = "IteratorAge"
      statistic = "Maximum"
      period    = 60
      periods   = 5
      threshold = var.iterator_age_alarm_ms
      what      = "falling behind its stream"
    }
    errors = {
      metric    = "Errors"
      statistic = "Sum"
      period    = 300
      periods   = 1
      threshold = 0
      what      = "raising errors (batches are retried or bisected)"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each            = local.alarms
  alarm_name          = "${var.alarm_name_prefix}-${var.function_name}-${each.key}"
  alarm_description   = "${var.function_name} is ${each.value.what}."
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = each.value.statistic
  period              = each.value.period
  evaluation_periods  = each.value.periods
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
}
