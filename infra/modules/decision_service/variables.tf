variable "function_name" {
  type        = string
  description = "Lambda function name."
}

variable "image_uri" {
  type        = string
  description = "The consumer image (it carries the decision handler too); required."
  default     = null
}

variable "memory_mb" {
  type        = number
  description = "Memory (MB)."
  default     = 512
}

variable "timeout_seconds" {
  type        = number
  description = "How long to wait for a ride's predictions before deciding with what arrived (DECISION_TIMEOUT_SECONDS)."
  default     = 60
}

variable "function_timeout_seconds" {
  type        = number
  description = "Lambda timeout (seconds)."
  default     = 60
}

variable "reserved_concurrency" {
  type        = number
  description = "Reserved concurrent executions."
  default     = 5
}

variable "log_retention_days" {
  type        = number
  description = "Log group retention (days)."
  default     = 30
}

variable "predictions_stream_arn" {
  type        = string
  description = "Stream of prediction records the mapping reads."
}

variable "decisions_stream_arn" {
  type        = string
  description = "Stream decisions are published to."
}

variable "decisions_stream_name" {
  type        = string
  description = "Its name (DECISIONS_STREAM_NAME)."
}

variable "decisions_table_arn" {
  type        = string
  description = "DynamoDB table of rides' predictions and decisions."
}

variable "decisions_table_name" {
  type        = string
  description = "Its name (DECISIONS_TABLE)."
}

variable "dead_letter_queue_arn" {
  type        = string
  description = "Queue for malformed prediction records."
}

variable "dead_letter_queue_url" {
  type        = string
  description = "Its URL (DEAD_LETTER_QUEUE_URL)."
}

variable "failed_batches_queue_arn" {
  type        = string
  description = "On-failure destination of the event source mapping."
}

variable "required_models" {
  type        = list(string)
  description = "Models whose predictions complete a ride (REQUIRED_MODELS)."
}

variable "rules_json" {
  type        = string
  description = "Decision rules as JSON (DECISION_RULES); empty: the defaults in rides/decision.py."
  default     = ""
}

variable "sweep_schedule" {
  type        = string
  description = "How often the timeout sweep runs."
  default     = "rate(1 minute)"
}

variable "batch_size" {
  type        = number
  description = "Records per invocation."
  default     = 500
}

variable "maximum_batching_window_in_seconds" {
  type        = number
  description = "Batching window (seconds)."
  default     = 1
}

variable "starting_position" {
  type        = string
  description = "TRIM_HORIZON or LATEST."
  default     = "TRIM_HORIZON"
}

variable "bisect_batch_on_function_error" {
  type        = bool
  description = "Split failing batches."
  default     = true
}

variable "maximum_retry_attempts" {
  type        = number
  description = "Retries before the on-failure destination."
  default     = 5
}

variable "maximum_record_age_in_seconds" {
  type        = number
  description = "Maximum record age before the on-failure destination."
  default     = 3600
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
