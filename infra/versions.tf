terraform {
  required_version = ">= 1.10.0" # S3-native state locking (use_lockfile)

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.100 (the newest 5.x) and every 6.x: nothing here is known to one major only.
      version = ">= 5.100, < 7"
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
