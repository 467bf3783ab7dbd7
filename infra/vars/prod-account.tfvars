# Prod in an account of its own (scripts/deploy.sh with VAR_FILE=vars/prod-account.tfvars):
# as vars/prod.tfvars, but the models are served from this account's own bucket, where the
# deploy imports the versions staging exported (no cross-account read of staging's bucket).
environment            = "prod"
input_shard_count      = 4
enhanced_fan_out       = true
stream_retention_hours = 168
log_retention_days     = 365
# Ten percent of the traffic for five minutes, watched by the alarms, then the rest.
deployment_config_name = "CodeDeployDefault.LambdaCanary10Percent5Minutes"
# No tracking server of its own: MLFLOW_TRACKING_URI is staging's (terraform output mlflow_tracking_uri).
mlflow_tracking_server = false
