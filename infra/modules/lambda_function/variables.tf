variable "function_name" {
  type        = string
  description = "Lambda function name; its role, policy and log group are named after it."
}

variable "image_uri" {
  type        = string
  description = "Container image in ECR (null with zip_package)."
  default     = null
}

variable "image_command" {
  type        = list(string)
  description = "The handler the image runs (its CMD by default); with zip_package, the handler."
  default     = null
}

variable "zip_package" {
  type = object({
    s3_bucket         = string
    s3_key            = string
    s3_object_version = string
    source_code_hash  = string
  })
  description = "A zip package (python -m rides.packaging) on S3 to deploy instead of the container image; null: the image."
  default     = null
}

variable "environment" {
  type        = map(string)
  description = "The function's environment variables."
}

variable "policy_statements" {
  type = list(object({
    sid       = string
    actions   = list(string)
    resources = list(string)
    s3_prefix = optional(string)
  }))
  description = "What the function may do besides writing its own logs and traces (least privilege: named resources)."
}

variable "memory_mb" {
  type        = number
  description = "Memory (MB)."
}

variable "timeout_seconds" {
  type        = number
  description = "Function timeout (seconds)."
}

variable "reserved_concurrency" {
  type        = number
  description = "Reserved concurrency: the function's throttle (-1: unreserved)."
}

variable "log_retention_days" {
  type        = number
  description = "Log group retention (days)."
}

variable "network" {
  type = object({
    subnet_ids         = list(string)
    security_group_ids = list(string)
  })
  description = "Private subnets and security groups to run in; null: outside any VPC."
  default     = null
}

variable "alarms" {
  type = map(object({
    metric    = string
    statistic = string
    period    = number
    periods   = number
    threshold = number
    what      = string
  }))
  description = "Alarms on the function's AWS/Lambda metrics, by name; a release is stopped and rolled back when one fires."
  default     = {}
}

variable "alarm_name_prefix" {
  type        = string
  description = "Prefix of the alarm names (the environment's)."
  default     = "rides"
}

variable "alarm_topic_arn" {
  type        = string
  description = "SNS topic the alarms notify (null: none)."
  default     = null
}

variable "rollout" {
  type = object({
    deployment_config_name = optional(string)
    codedeploy_app_name    = optional(string)
    codedeploy_role_arn    = optional(string)
    extra_alarm_names      = optional(list(string), [])
  })
  description = "How a release reaches traffic (../lambda_release); the defaults move the alias directly."
  default     = {}
}
