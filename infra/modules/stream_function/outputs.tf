output "function_name" {
  description = "The function."
  value       = aws_lambda_function.this.function_name
}

output "function_arn" {
  description = "Its ARN."
  value       = aws_lambda_function.this.arn
}

output "event_source_mapping_uuid" {
  description = "The Kinesis event source mapping."
  value       = aws_lambda_event_source_mapping.this.uuid
}
