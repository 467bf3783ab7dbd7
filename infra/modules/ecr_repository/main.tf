# The consumer image repository: immutable tags, scanned on push, old images expire.
variable "name" {
  type        = string
  description = "Repository name."
}

variable "reader_accounts" {
  type        = list(string)
  description = "Other AWS accounts that may pull from this repository (prod in an account of its own copies staging's images by digest)."
  default     = []
}

variable "keep_images" {
  type        = number
  description = "How many images to keep (older ones expire)."
  default     = 30
}

locals {
  # arn:<partition>:ecr:<region>:<account>:repository/<name>: the repository's own ARN gives the
  # partition, region and account (data.aws_region's attribute is named differently in 5.x and 6.x).
  arn_parts = split(":", aws_ecr_repository.this.arn)
}

resource "aws_ecr_repository" "this" {
  name                 = var.name
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
  }
}

resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the newest ${var.keep_images} images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = var.keep_images
      }
      action = { type = "expire" }
    }]
  })
}

# Lambda pulls the image with the service principal; only functions of this account may.
data "aws_iam_policy_document" "lambda_pull" {
  statement {
    sid     = "LambdaPull"
    actions = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "aws:sourceArn"
      values   = ["arn:${local.arn_parts[1]}:lambda:${local.arn_parts[3]}:${local.arn_parts[4]}:function:*"]
    }
  }
}

data "aws_iam_policy_document" "pull" {
  source_policy_documents = [data.aws_iam_policy_document.lambda_pull.json]
  dynamic "statement" {
    for_each = length(var.reader_accounts) > 0 ? [1] : []
    content {
      sid     = "OtherAccountsCopyImages"
      actions = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability", "ecr:DescribeImages"]
      principals {
        type        = "AWS"
        identifiers = [for account in var.reader_accounts : "arn:${local.arn_parts[1]}:iam::${account}:root"]
      }
    }
  }
}

resource "aws_ecr_repository_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy     = data.aws_iam_policy_document.pull.json
}

output "repository_url" {
  description = "Registry URL to push to and pull from."
  value       = aws_ecr_repository.this.repository_url
}

output "arn" {
  description = "Repository ARN."
  value       = aws_ecr_repository.this.arn
}
