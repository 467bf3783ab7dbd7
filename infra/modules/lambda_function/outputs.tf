output "function_name" {
  description = "The function."
  value       = aws_lambda_function.this.function_name
}

output "alias_arn" {
  description = "The `live` alias: what triggers call."
  value       = module.release.alias_arn
}

output "alias_name" {
  description = "The alias name (the qualifier to invoke)."
  value       = module.release.alias_name
}

output "release" {
  description = "What `rides release` needs to move the alias."
  value       = module.release.release
}
