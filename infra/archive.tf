# The archive: the output streams into parquet on S3, with Glue tables.

# The archive: predictions, decisions and completions as parquet in the model bucket
# (archive/<stream>/dt=/hour=), so evaluation and drift can look back past the retention.
resource "aws_glue_catalog_database" "archive" {
  count = var.stream_archive ? 1 : 0
  name  = replace(local.names.archive, "-", "_")
}

module "stream_archive" {
  source   = "./modules/stream_archive"
  for_each = var.stream_archive ? local.archived_streams : {}

  name          = "${local.names.archive}-${each.key}"
  stream_arn    = each.value.arn
  bucket_arn    = module.model_bucket.arn
  prefix        = "archive/${each.value.name}"
  glue_database = aws_glue_catalog_database.archive[0].name
  columns       = local.archive_columns[each.key]
  kms_key_arn   = var.stream_kms_key_arn
}

locals {
  archived_streams = {
    predictions = { arn = module.predictions_stream.arn, name = module.predictions_stream.name }
    decisions   = { arn = module.decisions_stream.arn, name = module.decisions_stream.name }
    completions = { arn = module.completions_stream.arn, name = module.completions_stream.name }
  }
  # rides/operate/archive.py COLUMNS, the same names and Glue types (tests/test_infra.py checks);
  # the prediction fields and outcomes are the models' (rides/stream/models.json).
  archive_columns = {
    predictions = [
      { name = "model", type = "string" },
      { name = "version", type = "string" },
      { name = "role", type = "string" },
      { name = "prediction", type = "struct<ride_id:string,${join(",", [for spec in local.model_specs : "${spec.prediction_field}:double"])}>" },
      { name = "source", type = "struct<shard_id:string,sequence_number:string,approximate_arrival_timestamp:double,sub_sequence_number:int>" },
    ]
    decisions = [
      { name = "decision_id", type = "string" },
      { name = "ride_id", type = "string" },
      { name = "decision", type = "string" },
      { name = "flags", type = "array<string>" },
      { name = "complete", type = "boolean" },
      { name = "reason", type = "string" },
      { name = "decided_at", type = "double" },
    ]
    completions = concat([
      { name = "type", type = "string" },
      { name = "version", type = "int" },
      { name = "ride_id", type = "string" },
      { name = "lpep_dropoff_datetime", type = "string" },
    ], [for spec in local.model_specs : { name = spec.outcome_field, type = "double" }])
  }
}
