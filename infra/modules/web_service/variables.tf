variable "function_name" {
  type        = string
  description = "Name of the web service's Lambda."
}

variable "image_uri" {
  type        = string
  description = "The web image (web/Dockerfile, with the Lambda Web Adapter) in ECR."
}

variable "environment" {
  type        = map(string)
  description = "Environment variables of the service (model, stream and table names)."
}

variable "input_stream_arn" {
  type        = string
  description = "The ride-events stream the consent mode puts rides on."
}

variable "decisions_table_arn" {
  type        = string
  description = "The decisions table GET /predictions/{ride_id} reads."
}

variable "model_bucket_arn" {
  type        = string
  description = "Bucket the served model's artifacts live in."
}

variable "memory_mb" {
  type        = number
  description = "Memory of the function (MB)."
  default     = 1024
}

variable "reserved_concurrency" {
  type        = number
  description = "Concurrent requests at most: the throttle (a request beyond it gets 429)."
  default     = 20
}

variable "log_retention_days" {
  type        = number
  description = "Days to keep the service's logs."
}

variable "alarm_name_prefix" {
  type        = string
  description = "Prefix of the alarm names (rides-<environment>)."
}

variable "alarm_topic_arn" {
  type        = string
  description = "SNS topic the alarms notify; null: alarms without actions."
  default     = null
}

variable "rollout" {
  type = object({
    deployment_config_name = optional(string)
    codedeploy_app_name    = optional(string)
    codedeploy_role_arn    = optional(string)
  })
  description = "How a release reaches traffic (../lambda_release); the defaults move the alias directly."
  default     = {}
}

variable "api_keys" {
  type = map(object({
    sha256 = string
    scopes = list(string)
  }))
  description = "Clients' API keys (hashes and scopes, rides.web.auth); empty: IAM auth alone."
  default     = {}
}

variable "policy_statements" {
  type = list(object({
    sid       = string
    actions   = list(string)
    resources = list(string)
  }))
  description = "What the function may do besides its own (e.g. the streams' customer-managed key)."
  default     = []
}
