variable "aws_region" {
  type        = string
  description = "The region the environments go to (the pipeline's AWS_REGION)."
}

variable "name_prefix" {
  type        = string
  description = "As infra/'s name_prefix: the state bucket is <prefix>-terraform-state-<account>-<region>."
  default     = "rides"
}

variable "github_repository" {
  type        = string
  description = "owner/name of the repository whose workflows deploy (.github/workflows/cd.yml)."
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository is owner/name."
  }
}

variable "environments" {
  type = map(object({
    github_environment = string # the GitHub environment whose jobs may assume this role
  }))
  description = "The environments deployed from this account, each with the GitHub environment its job runs in. Prod in an account of its own: only prod here, and only stg in staging's."
  default = {
    stg  = { github_environment = "staging" }
    prod = { github_environment = "production" }
  }
}

variable "create_github_oidc_provider" {
  type        = bool
  description = "Create the account's GitHub Actions OIDC provider (one per account: false when it exists)."
  default     = true
}

variable "staging_account_id" {
  type        = string
  description = "Prod in an account of its own: staging's account, whose images prod's deploy role copies by digest. Null: this account."
  default     = null
}
