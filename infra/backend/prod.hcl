# terraform init -backend-config=backend/prod.hcl
bucket       = "rides-terraform-state"
key          = "rides/prod/terraform.tfstate"
region       = "us-east-1"
encrypt      = true
use_lockfile = true
