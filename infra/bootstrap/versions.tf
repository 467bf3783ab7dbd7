terraform {
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.100, < 7"
    }
  }
  # Local state: this configuration creates the bucket every other state lives in. Keep its
  # terraform.tfstate (it holds no secret) or import the resources again to change them.
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = {
      project    = "rides"
      managed-by = "terraform"
      part       = "bootstrap"
    }
  }
}
