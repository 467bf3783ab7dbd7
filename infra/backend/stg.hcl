# terraform init -backend-config=backend/stg.hcl
bucket       = "rides-terraform-state"
key          = "rides/stg/terraform.tfstate"
region       = "us-east-1"
encrypt      = true
use_lockfile = true
