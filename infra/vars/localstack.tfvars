# On top of vars/stg.tfvars for an emulator (make integration-test-docker): the local stack's
# plain names, aliases moved directly, and none of what the emulators here lack (CodeDeploy,
# RDS, SageMaker, Glue): the local MLflow is SQLite + the emulator's S3 (rides stack up).
plain_names            = true
aws_region             = "us-east-1"
model_bucket_name      = "rides-models-stg" # the local stack's (rides stack up)
deployment_config_name = null
batch_database         = false
mlflow_tracking_server = false
stream_archive         = false # Glue is not in LocalStack's free image
