# An SQS queue that holds what must not be lost: encrypted, kept for the maximum 14 days.
variable "name" {
  type        = string
  description = "Queue name."
}

variable "retention_seconds" {
  type        = number
  description = "Message retention (the SQS maximum by default)."
  default     = 1209600
}

resource "aws_sqs_queue" "this" {
  name                       = var.name
  message_retention_seconds  = var.retention_seconds
  sqs_managed_sse_enabled    = true
  visibility_timeout_seconds = 300
  # Redrive-safe: the consumers send here directly, and no other queue may make it its
  # dead-letter queue by accident; operators move messages back with a redrive task.
  redrive_allow_policy = jsonencode({ redrivePermission = "denyAll" })
}

output "arn" {
  description = "Queue ARN."
  value       = aws_sqs_queue.this.arn
}

output "url" {
  description = "Queue URL."
  value       = aws_sqs_queue.this.url
}

output "name" {
  description = "Queue name."
  value       = aws_sqs_queue.this.name
}
