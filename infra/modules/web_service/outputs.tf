output "url" {
  description = "The service's function URL (IAM-signed requests only)."
  value       = aws_lambda_function_url.this.function_url
}

output "function_name" {
  description = "The web service's Lambda."
  value       = module.function.function_name
}

output "release" {
  description = "What `rides release` needs to move the alias."
  value       = module.function.release
}
