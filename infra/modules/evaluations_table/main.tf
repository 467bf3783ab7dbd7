# Live evaluation's table (rides/stream/evaluation/store.py): running error sums per model
# version, role and drop-off hour (pk sums), the same on the rides a challenger and production
# both predicted (pk paired), each completions shard's mark (pk mark), completions waiting for
# their ride's decision (pk waiting), probe rides' joins (pk trace) and the drift counts per
# hour (pk drift#<hour>). Items expire (TTL).
variable "name" {
  type        = string
  description = "Table name."
}

resource "aws_dynamodb_table" "this" {
  #checkov:skip=CKV_AWS_119:Encrypted with the AWS-owned key (DynamoDB default); a CMK adds cost without a consumer that needs it.
  name         = var.name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
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

output "name" {
  description = "Table name."
  value       = aws_dynamodb_table.this.name
}

output "arn" {
  description = "Table ARN."
  value       = aws_dynamodb_table.this.arn
}
