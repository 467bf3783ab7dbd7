# A Kinesis data stream: provisioned shards or on-demand, KMS-encrypted.
variable "name" {
  type        = string
  description = "Stream name."
}

variable "shard_count" {
  type        = number
  description = "Provisioned shards; null for on-demand capacity."
  default     = null
}

variable "retention_hours" {
  type        = number
  description = "Record retention (24-8760 hours)."
  default     = 24
}

variable "kms_key_id" {
  type        = string
  description = "KMS key for encryption at rest; the AWS-managed key by default."
  default     = "alias/aws/kinesis"
}

resource "aws_kinesis_stream" "this" {
  #checkov:skip=CKV_AWS_185:The AWS-managed key is the default; pass kms_key_id for a customer-managed key.
  name             = var.name
  shard_count      = var.shard_count
  retention_period = var.retention_hours
  encryption_type  = "KMS"
  kms_key_id       = var.kms_key_id

  stream_mode_details {
    stream_mode = var.shard_count == null ? "ON_DEMAND" : "PROVISIONED"
  }
}

output "arn" {
  description = "Stream ARN."
  value       = aws_kinesis_stream.this.arn
}

output "name" {
  description = "Stream name."
  value       = aws_kinesis_stream.this.name
}
