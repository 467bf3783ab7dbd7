output "function_name" {
  description = "The function."
  value       = module.function.function_name
}

output "alias_arn" {
  description = "The `live` alias: what triggers call."
  value       = module.function.alias_arn
}

output "alias_name" {
  description = "The alias name (the qualifier to invoke)."
  value       = module.function.alias_name
}

output "release" {
  description = "What `rides release` needs to move the alias."
  value       = module.function.release
}

output "event_source_mapping_uuid" {
  description = "The Kinesis event source mapping."
  value       = aws_lambda_event_source_mapping.this.uuid
}
