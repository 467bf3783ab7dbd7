# Prod in an account of its own: terraform init -backend-config=backend/prod-account.hcl
# The state bucket lives in the prod account (a bucket name is global: one per account).
bucket       = "rides-terraform-state-prod"
key          = "rides/prod/terraform.tfstate"
region       = "us-east-1"
encrypt      = true
use_lockfile = true
