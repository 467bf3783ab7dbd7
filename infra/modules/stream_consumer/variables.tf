variable "function_name" {
  type        = string
  description = "Lambda function name."
}

variable "image_uri" {
  type        = string
  description = "Container image (ECR URI with tag); required."
  default     = null
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

variable "model_name" {
  type        = string
  description = "Registered model name, written into every prediction (MODEL_NAME)."
}

variable "prediction_field" {
  type        = string
  description = "Field of the prediction record that holds the value (PREDICTION_FIELD)."
}

variable "model_uri" {
  type        = string
  description = "S3 location of the MLflow model (MODEL_URI); empty keeps the mapping disabled."
  default     = ""
}

variable "model_version" {
  type        = string
  description = "Registered version written into predictions (MODEL_VERSION)."
  default     = ""
}

variable "publish_concurrency" {
  type        = number
  description = "Parallel PutRecords calls per batch (PUBLISH_CONCURRENCY)."
  default     = 4
}

variable "dry_run" {
  type        = bool
  description = "Return predictions instead of publishing (DRY_RUN)."
  default     = false
}

variable "input_stream_arn" {
  type        = string
  description = "Stream the event source mapping reads."
}

variable "output_stream_arn" {
  type        = string
  description = "Stream the function publishes to."
}

variable "output_stream_name" {
  type        = string
  description = "Name of the output stream (PREDICTIONS_STREAM_NAME)."
}

variable "model_bucket_arn" {
  type        = string
  description = "Bucket holding the model artifacts."
}

variable "model_prefix" {
  type        = string
  description = "Key prefix the function may read models from."
  default     = "mlflow/"
}

variable "dead_letter_queue_arn" {
  type        = string
  description = "Queue for malformed records."
}

variable "dead_letter_queue_url" {
  type        = string
  description = "URL of that queue (DEAD_LETTER_QUEUE_URL)."
}

variable "dead_letter_queue_name" {
  type        = string
  description = "Name of that queue, for the depth alarm."
}

variable "failed_batches_queue_arn" {
  type        = string
  description = "On-failure destination of the event source mapping."
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

variable "parallelization_factor" {
  type        = number
  description = "Concurrent batches per shard."
  default     = 1
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
