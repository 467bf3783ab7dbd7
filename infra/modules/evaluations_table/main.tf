# Live evaluation's table (rides/stream/evaluation/store.py): per ride its predictions and its
# outcome (pk ride#<id>), each evaluated pair once (pk eval#<model>#<version>#<role>#<shard>),
# the drift counts per hour (pk drift#<hour>) and the catalog of versions. Items expire (TTL).
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
