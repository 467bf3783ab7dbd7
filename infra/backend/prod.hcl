# terraform init -backend-config=backend/prod.hcl -backend-config=bucket=<state bucket> -backend-config=region=<region>
# (scripts/deploy.sh passes both: the account's state bucket, AWS_REGION.)
key          = "rides/prod/terraform.tfstate"
encrypt      = true
use_lockfile = true
