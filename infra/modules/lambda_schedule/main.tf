# An EventBridge rule that invokes a Lambda on a schedule (the decision sweep, the batch job).
variable "name" {
  type        = string
  description = "Rule name."
}

variable "description" {
  type        = string
  description = "What the schedule is for."
}

variable "schedule_expression" {
  type        = string
  description = "EventBridge cron or rate expression."
}

variable "function_name" {
  type        = string
  description = "The Lambda to invoke."
}

variable "alias_arn" {
  type        = string
  description = "The alias to invoke (what serves, not $LATEST)."
}

variable "alias_name" {
  type        = string
  description = "The alias name (the permission's qualifier)."
}

variable "input" {
  type        = string
  description = "The event (JSON) the function receives."
  default     = "{}"
}

resource "aws_cloudwatch_event_rule" "this" {
  name                = var.name
  description         = var.description
  schedule_expression = var.schedule_expression
}

resource "aws_cloudwatch_event_target" "this" {
  rule  = aws_cloudwatch_event_rule.this.name
  arn   = var.alias_arn
  input = var.input
}

resource "aws_lambda_permission" "this" {
  statement_id  = "AllowSchedule-${var.name}"
  action        = "lambda:InvokeFunction"
  function_name = var.function_name
  qualifier     = var.alias_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.this.arn
}
