# A Kinesis stream archived to S3 as parquet, partitioned by arrival hour, by Kinesis Data
# Firehose: s3://<bucket>/<prefix>/dt=YYYY-MM-DD/hour=HH/. The JSON records become parquet through
# a Glue table with the stream's columns (rides/operate/archive.py COLUMNS; `rides archive` writes the
# same layout locally). Evaluation and drift can then look back past the stream's retention.

variable "name" {
  type        = string
  description = "Delivery stream (and Glue table) name."
}

variable "stream_arn" {
  type        = string
  description = "The Kinesis stream to archive."
}

variable "bucket_arn" {
  type        = string
  description = "Bucket the archive goes to (the model bucket)."
}

variable "prefix" {
  type        = string
  description = "Key prefix, e.g. archive/ride-predictions."
}

variable "glue_database" {
  type        = string
  description = "Glue database holding the archive's tables."
}

variable "columns" {
  type        = list(object({ name = string, type = string }))
  description = "The records' columns as Glue types (rides/operate/archive.py COLUMNS)."
}

variable "buffer_seconds" {
  type        = number
  description = "Longest Firehose waits before writing a file (60-900)."
  default     = 300
}

variable "kms_key_arn" {
  type        = string
  description = "The stream's customer-managed KMS key, if it has one: Firehose then needs kms:Decrypt on it."
  default     = null
}

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

resource "aws_glue_catalog_table" "this" {
  name          = replace(var.name, "-", "_")
  database_name = var.glue_database
  table_type    = "EXTERNAL_TABLE"
  parameters    = { classification = "parquet" }

  storage_descriptor {
    location      = "s3://${split(":::", var.bucket_arn)[1]}/${var.prefix}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = var.columns
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }

  partition_keys {
    name = "dt"
    type = "string"
  }

  partition_keys {
    name = "hour"
    type = "string"
  }
}

resource "aws_iam_role" "this" {
  name = "${var.name}-firehose"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "firehose.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "sts:ExternalId" = data.aws_caller_identity.current.account_id } }
    }]
  })
}

resource "aws_iam_role_policy" "this" {
  name = "archive"
  role = aws_iam_role.this.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(var.kms_key_arn == null ? [] : [{
      Sid      = "DecryptStreamRecords"
      Effect   = "Allow"
      Action   = ["kms:Decrypt"]
      Resource = var.kms_key_arn
      }], [
      {
        Sid      = "ReadStream"
        Effect   = "Allow"
        Action   = ["kinesis:DescribeStream", "kinesis:GetShardIterator", "kinesis:GetRecords", "kinesis:ListShards"]
        Resource = var.stream_arn
      },
      {
        Sid      = "WriteArchive"
        Effect   = "Allow"
        Action   = ["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:ListBucket", "s3:PutObject"]
        Resource = [var.bucket_arn, "${var.bucket_arn}/${var.prefix}/*", "${var.bucket_arn}/${var.prefix}-errors/*"]
      },
      {
        Sid    = "ReadSchema"
        Effect = "Allow"
        Action = ["glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions"]
        Resource = [
          "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:catalog",
          "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:database/${var.glue_database}",
          "arn:${data.aws_partition.current.partition}:glue:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:table/${var.glue_database}/${aws_glue_catalog_table.this.name}",
        ]
      },
    ])
  })
}

resource "aws_kinesis_firehose_delivery_stream" "this" {
  #checkov:skip=CKV_AWS_240:A Kinesis-stream source is encrypted by the stream (SSE with KMS); Firehose SSE applies to Direct PUT only.
  #checkov:skip=CKV_AWS_241:As above: no Firehose-side encryption exists for a Kinesis-stream source.
  name        = var.name
  destination = "extended_s3"

  kinesis_source_configuration {
    kinesis_stream_arn = var.stream_arn
    role_arn           = aws_iam_role.this.arn
  }

  extended_s3_configuration {
    role_arn            = aws_iam_role.this.arn
    bucket_arn          = var.bucket_arn
    prefix              = "${var.prefix}/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/"
    error_output_prefix = "${var.prefix}-errors/!{firehose:error-output-type}/dt=!{timestamp:yyyy-MM-dd}/"
    buffering_size      = 64 # MB: the minimum with format conversion
    buffering_interval  = var.buffer_seconds

    data_format_conversion_configuration {
      input_format_configuration {
        deserializer {
          open_x_json_ser_de {}
        }
      }
      output_format_configuration {
        serializer {
          parquet_ser_de {}
        }
      }
      schema_configuration {
        database_name = var.glue_database
        table_name    = aws_glue_catalog_table.this.name
        role_arn      = aws_iam_role.this.arn
      }
    }
  }

  depends_on = [aws_iam_role_policy.this]
}

output "delivery_stream_name" {
  description = "The Firehose delivery stream."
  value       = aws_kinesis_firehose_delivery_stream.this.name
}
