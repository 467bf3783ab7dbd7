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
    name = "pending"
    type = "S"
  }

  attribute {
    name = "first_seen"
    type = "N"
  }

  # Sparse: only rides still waiting for predictions carry `pending`; the sweep queries it.
  global_secondary_index {
    name            = "pending-index"
    hash_key        = "pending"
    range_key       = "first_seen"
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
