# terraform init -backend-config=backend/stg.hcl -backend-config=bucket=<state bucket> -backend-config=region=<region>
# The bucket and the region come from the account (scripts/deploy.sh: <name prefix>-terraform-state-
# <account id>-<region>, what infra/bootstrap creates): a bucket name is global, and one setting
# (AWS_REGION) says where everything goes.
key          = "rides/stg/terraform.tfstate"
encrypt      = true
use_lockfile = true
