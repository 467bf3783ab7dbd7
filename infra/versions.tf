terraform {
  required_version = ">= 1.10.0" # S3-native state locking (use_lockfile)

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Partial configuration: the bucket and the per-environment key come from
  # backend/<env>.hcl (`terraform init -backend-config=backend/stg.hcl`).
  backend "s3" {}
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      project     = "rides"
      environment = var.environment
      managed-by  = "terraform"
    }
  }
}
