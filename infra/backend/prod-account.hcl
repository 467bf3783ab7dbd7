# Prod in an account of its own: terraform init -backend-config=backend/prod-account.hcl plus the
# bucket and region (scripts/deploy.sh). The state bucket's name carries the account id, so the
# prod account's is its own without naming it here.
key          = "rides/prod/terraform.tfstate"
encrypt      = true
use_lockfile = true
