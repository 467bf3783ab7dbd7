# How a Lambda's new code reaches traffic. Every trigger (event source mapping, schedule,
# function URL) calls the `live` alias, never $LATEST. An apply publishes a version and leaves
# the alias where it is; scripts/deploy.sh (`rides release`) then moves it, through a CodeDeploy
# deployment that shifts traffic (canary or linear) and rolls back by itself when one of the
# given alarms fires, or directly where no deployment config is set (the local stack).

variable "function_name" {
  type        = string
  description = "The function."
}

variable "function_version" {
  type        = string
  description = "The version the apply published: what the alias points at when it is created, and the target of the next release."
}

variable "alias_name" {
  type        = string
  description = "The alias every trigger calls."
  default     = "live"
}

variable "deployment_config_name" {
  type        = string
  description = "CodeDeploy traffic shifting (CodeDeployDefault.LambdaCanary10Percent5Minutes, ...); null: the alias is moved directly."
  default     = null
}

variable "codedeploy_app_name" {
  type        = string
  description = "The environment's CodeDeploy application (with deployment_config_name)."
  default     = null
}

variable "codedeploy_role_arn" {
  type        = string
  description = "The role CodeDeploy shifts traffic with (with deployment_config_name)."
  default     = null
}

variable "alarm_names" {
  type        = list(string)
  description = "Alarms that stop a deployment and roll it back."
  default     = []
}

resource "aws_lambda_alias" "this" {
  name             = var.alias_name
  description      = "What serves: moved by a release, never by an apply."
  function_name    = var.function_name
  function_version = var.function_version

  lifecycle {
    # A release (CodeDeploy or `rides release`) owns the alias once it exists: an apply that
    # moved it would send all traffic to untested code at once.
    ignore_changes = [function_version, routing_config]
  }
}

resource "aws_codedeploy_deployment_group" "this" {
  count                  = var.deployment_config_name == null ? 0 : 1
  app_name               = var.codedeploy_app_name
  deployment_group_name  = var.function_name
  service_role_arn       = var.codedeploy_role_arn
  deployment_config_name = var.deployment_config_name

  deployment_style {
    deployment_option = "WITH_TRAFFIC_CONTROL"
    deployment_type   = "BLUE_GREEN"
  }

  auto_rollback_configuration {
    enabled = true
    events  = ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"]
  }

  alarm_configuration {
    enabled = true
    alarms  = var.alarm_names
  }
}

output "alias_arn" {
  description = "What triggers call."
  value       = aws_lambda_alias.this.arn
}

output "alias_name" {
  description = "The alias name (a qualifier)."
  value       = aws_lambda_alias.this.name
}

output "release" {
  description = "What `rides release` needs to move the alias to the published version."
  value = {
    function_name    = var.function_name
    alias            = aws_lambda_alias.this.name
    version          = var.function_version
    application      = var.deployment_config_name == null ? null : var.codedeploy_app_name
    deployment_group = one(aws_codedeploy_deployment_group.this[*].deployment_group_name)
  }
}
