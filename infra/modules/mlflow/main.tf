# The environment's MLflow: Amazon SageMaker's managed tracking server and model registry, its
# artifacts in the model bucket under mlflow/ (where the functions read the models from). The
# rides CLI talks to it with MLFLOW_TRACKING_URI set to the server's ARN (the sagemaker-mlflow
# plugin signs each request with the caller's AWS credentials).

variable "name" {
  type        = string
  description = "Tracking server name."
}

variable "artifact_bucket" {
  type        = string
  description = "The model bucket; artifacts go under s3://<bucket>/mlflow."
}

variable "size" {
  type        = string
  description = "Small (up to 25 users), Medium or Large."
  default     = "Small"
}

variable "mlflow_version" {
  type        = string
  description = "MLflow version of the server (null: SageMaker's default)."
  default     = null
}

data "aws_partition" "current" {}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "${var.name}-mlflow"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

# The server reads and writes artifacts under mlflow/ of the model bucket, nothing else.
data "aws_iam_policy_document" "artifacts" {
  statement {
    sid       = "Artifacts"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.artifact_bucket}/mlflow/*"]
  }
  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = ["arn:${data.aws_partition.current.partition}:s3:::${var.artifact_bucket}"]
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "${var.name}-mlflow-artifacts"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.artifacts.json
}

resource "aws_sagemaker_mlflow_tracking_server" "this" {
  tracking_server_name            = var.name
  artifact_store_uri              = "s3://${var.artifact_bucket}/mlflow"
  role_arn                        = aws_iam_role.this.arn
  tracking_server_size            = var.size
  mlflow_version                  = var.mlflow_version
  automatic_model_registration    = false # rides train registers what passed its checks
  weekly_maintenance_window_start = "Sun:03:00"

  depends_on = [aws_iam_role_policy.this]
}

output "tracking_uri" {
  description = "MLFLOW_TRACKING_URI for the rides CLI (the server's ARN)."
  value       = aws_sagemaker_mlflow_tracking_server.this.arn
}

output "url" {
  description = "The MLflow UI (sign in through the SageMaker console or a presigned URL)."
  value       = aws_sagemaker_mlflow_tracking_server.this.tracking_server_url
}
