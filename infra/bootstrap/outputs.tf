output "state_bucket" {
  description = "The state bucket (scripts/deploy.sh derives the same name)."
  value       = aws_s3_bucket.state.bucket
}

output "deploy_role_arns" {
  description = "Environment → the role its GitHub environment's jobs assume (the AWS_DEPLOY_ROLE_ARN secrets)."
  value       = { for env, role in aws_iam_role.deploy : env => role.arn }
}
