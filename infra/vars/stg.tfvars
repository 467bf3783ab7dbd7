environment       = "stg"
aws_region        = "us-east-1"
model_bucket_name = "rides-models-stg"
