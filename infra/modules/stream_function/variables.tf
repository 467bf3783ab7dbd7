variable "function_name" {
  type        = string
  description = "Lambda function name."
}

variable "image_uri" {
  type        = string
  description = "Container image (ECR URI with tag); required."
  default     = null
}

variable "image_command" {
  type        = list(string)
  description = "Handler to run instead of the image's CMD (one image serves several functions)."
  default     = null
}

variable "environment" {
  type        = map(string)
  description = "Environment variables: exactly what the handler reads."
}

variable "policy_statements" {
  type = list(object({
    sid       = string
    actions   = list(string)
    resources = list(string)
    s3_prefix = optional(string) # limits s3:ListBucket to keys under this prefix
  }))
  description = "What the function may do beyond reading its stream, sending to its queues and logging."
}

variable "memory_mb" {
  type        = number
  description = "Memory (MB); CPU scales with it."
  default     = 1024
}

variable "timeout_seconds" {
  type        = number
  description = "Function timeout (seconds)."
  default     = 60
}

variable "reserved_concurrency" {
  type        = number
  description = "Reserved concurrent executions."
  default     = 10
}

variable "log_retention_days" {
  type        = number
  description = "Log group retention (days)."
  default     = 30
}

variable "input_stream_arn" {
  type        = string
  description = "Stream the event source mapping reads."
}

variable "dead_letter_queue_arn" {
  type        = string
  description = "Queue for records that can never be processed."
}

variable "failed_batches_queue_arn" {
  type        = string
  description = "On-failure destination of the event source mapping."
}

variable "enabled" {
  type        = bool
  description = "Whether the event source mapping delivers (false while the function has nothing to serve)."
  default     = true
}

variable "event_source" {
  type = object({
    batch_size                         = number
    maximum_batching_window_in_seconds = number
    starting_position                  = string
    parallelization_factor             = number
    bisect_batch_on_function_error     = bool
    maximum_retry_attempts             = number
    maximum_record_age_in_seconds      = number
  })
  description = "The mappings' batching and failure policy (the root's local.event_sources: one policy, each function's changes in one table)."
}

variable "alarm_name_prefix" {
  type        = string
  description = "Prefix of the alarm names."
}

variable "alarm_topic_arn" {
  type        = string
  description = "SNS topic for alarm notifications (null: none)."
  default     = null
}

variable "iterator_age_alarm_ms" {
  type        = number
  description = "Iterator age that raises the alarm (ms)."
  default     = 60000
}

variable "enhanced_fan_out" {
  type        = bool
  description = "Read through a registered stream consumer (enhanced fan-out) instead of polling the shards."
  default     = false
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

variable "extra_input_streams" {
  type        = map(string)
  description = "More streams the function reads, name => ARN: one event source mapping each, same settings (the evaluation consumer reads three)."
  default     = {}
}
