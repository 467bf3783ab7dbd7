variable "github_repository" {
  type        = string
  description = "owner/name of the repository that deploys."
}

variable "aws_region" {
  type        = string
  description = "AWS_REGION for every deploy job."
}

variable "deploy_role_arns" {
  type        = map(string)
  description = "infra/bootstrap's deploy_role_arns output: stg and prod (prod's from its own account's bootstrap when it has one)."
}

variable "mlflow_tracking_uri" {
  type        = string
  description = "The tracking server (infra/'s mlflow_tracking_uri output of staging)."
}

variable "prod_account" {
  type        = string
  description = "same (prod beside staging) or separate (prod in an account of its own): cd.yml's PROD_ACCOUNT."
  default     = "same"
  validation {
    condition     = contains(["same", "separate"], var.prod_account)
    error_message = "prod_account is same or separate."
  }
}

variable "prod_reviewers" {
  type        = list(number)
  description = "GitHub user ids who approve a production deploy (the environment's protection)."
  default     = []
}

locals {
  repository = split("/", var.github_repository)[1]
}

resource "github_repository_environment" "staging" {
  repository  = local.repository
  environment = "staging"
}

resource "github_repository_environment" "production" {
  repository  = local.repository
  environment = "production"
  dynamic "reviewers" {
    for_each = length(var.prod_reviewers) > 0 ? [1] : []
    content {
      users = var.prod_reviewers
    }
  }
  deployment_branch_policy {
    protected_branches     = true
    custom_branch_policies = false
  }
}

resource "github_actions_environment_secret" "staging_role" {
  repository      = local.repository
  environment     = github_repository_environment.staging.environment
  secret_name     = "AWS_DEPLOY_ROLE_ARN"
  plaintext_value = var.deploy_role_arns["stg"]
}

resource "github_actions_environment_secret" "production_role" {
  repository      = local.repository
  environment     = github_repository_environment.production.environment
  secret_name     = "AWS_DEPLOY_ROLE_ARN_PROD"
  plaintext_value = var.deploy_role_arns["prod"]
}

# The production job assumes staging's role too when prod is in an account of its own (to copy
# staging's images and move @production in staging's registry).
resource "github_actions_environment_secret" "production_staging_role" {
  repository      = local.repository
  environment     = github_repository_environment.production.environment
  secret_name     = "AWS_DEPLOY_ROLE_ARN"
  plaintext_value = var.deploy_role_arns["stg"]
}

resource "github_actions_environment_secret" "mlflow" {
  for_each        = { staging = github_repository_environment.staging.environment, production = github_repository_environment.production.environment }
  repository      = local.repository
  environment     = each.value
  secret_name     = "MLFLOW_TRACKING_URI"
  plaintext_value = var.mlflow_tracking_uri
}

resource "github_actions_variable" "region" {
  repository    = local.repository
  variable_name = "AWS_REGION"
  value         = var.aws_region
}

resource "github_actions_variable" "prod_account" {
  repository    = local.repository
  variable_name = "PROD_ACCOUNT"
  value         = var.prod_account
}
