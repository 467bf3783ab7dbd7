# Where the decision service gathers a ride's predictions (keyed by ride id).
variable "name" {
  type        = string
  description = "Table name."
}

resource "aws_dynamodb_table" "this" {
  #checkov:skip=CKV_AWS_119:Encrypted with the AWS-owned key (DynamoDB default); a CMK adds cost without a consumer that needs it.
  name         = var.name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "ride_id"

  attribute {
    name = "ride_id"
    type = "S"
  }

  attribute {
    name = "due_shard"
    type = "S"
  }

  attribute {
    name = "due_at"
    type = "N"
  }

  # Sparse: only rides that are collecting predictions or decided but not yet published carry
  # due_shard/due_at; the sweep queries it. Sharded by a hash of the ride id (8 values) so no
  # single partition key takes every ride's index writes (rides/stream/decision/store.py).
  global_secondary_index {
    name            = "due-index"
    hash_key        = "due_shard"
    range_key       = "due_at"
    projection_type = "KEYS_ONLY"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }
}

output "arn" {
  description = "Table ARN."
  value       = aws_dynamodb_table.this.arn
}

output "name" {
  description = "Table name."
  value       = aws_dynamodb_table.this.name
}
