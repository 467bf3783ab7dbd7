# What a deploy needs before its first run, once per account (README, "From an empty account"):
#   terraform -chdir=infra/bootstrap init && terraform -chdir=infra/bootstrap apply \
#     -var aws_region=$AWS_REGION -var github_repository=owner/name
# - the state bucket every environment's state lives in (<prefix>-terraform-state-<account>-<region>,
#   the name scripts/deploy.sh derives);
# - GitHub Actions' OIDC provider, and per environment a deploy role that only that GitHub
#   environment's jobs may assume, allowed what scripts/deploy.sh and cd.yml do on that
#   environment's resources (named as infra/ names them: the environment is in every name);
# infra/bootstrap/github then creates the GitHub environments, secrets and variables cd.yml reads.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account   = data.aws_caller_identity.current.account_id
  partition = data.aws_partition.current.partition
  region    = var.aws_region
  arn       = "arn:${local.partition}"
  # Every name infra/ gives carries the environment: ride-events-stg, rides-alarms-stg, ...
  scope = { for env in keys(var.environments) : env => {
    kinesis = [
      "${local.arn}:kinesis:${local.region}:${local.account}:stream/ride-*-${env}",
      "${local.arn}:kinesis:${local.region}:${local.account}:stream/ride-*-${env}/consumer/*",
    ]
    functions = [
      "${local.arn}:lambda:${local.region}:${local.account}:function:ride-*-${env}",
      "${local.arn}:lambda:${local.region}:${local.account}:function:ride-*-${env}:*",
    ]
    roles = [
      "${local.arn}:iam::${local.account}:role/ride-*-${env}*",
      "${local.arn}:iam::${local.account}:role/rides-*${env}*",
    ]
    queues = ["${local.arn}:sqs:${local.region}:${local.account}:ride-*-${env}"]
    tables = [
      "${local.arn}:dynamodb:${local.region}:${local.account}:table/ride-*-${env}",
      "${local.arn}:dynamodb:${local.region}:${local.account}:table/ride-*-${env}/*",
    ]
    buckets = [
      "${local.arn}:s3:::${var.name_prefix}-models-${env}-${local.account}-${local.region}",
      "${local.arn}:s3:::${var.name_prefix}-models-${env}-${local.account}-${local.region}/*",
    ]
    repository = "${local.arn}:ecr:${local.region}:${local.account}:repository/ride-duration-consumer-${env}"
    monitoring = [
      "${local.arn}:sns:${local.region}:${local.account}:rides-alarms-${env}",
      "${local.arn}:cloudwatch:${local.region}:${local.account}:alarm:rides-${env}-*",
      "${local.arn}:logs:${local.region}:${local.account}:log-group:/aws/lambda/ride-*-${env}*",
      "${local.arn}:logs:${local.region}:${local.account}:log-group:/aws/kinesisfirehose/rides-archive-${env}*",
    ]
    codedeploy = [
      "${local.arn}:codedeploy:${local.region}:${local.account}:application:rides-${env}",
      "${local.arn}:codedeploy:${local.region}:${local.account}:deploymentgroup:rides-${env}/*",
      "${local.arn}:codedeploy:${local.region}:${local.account}:deploymentconfig:*",
    ]
    events   = ["${local.arn}:events:${local.region}:${local.account}:rule/ride-*-${env}*"]
    firehose = ["${local.arn}:firehose:${local.region}:${local.account}:deliverystream/rides-archive-${env}-*"]
    glue = [
      "${local.arn}:glue:${local.region}:${local.account}:catalog",
      "${local.arn}:glue:${local.region}:${local.account}:database/rides_archive_${env}",
      "${local.arn}:glue:${local.region}:${local.account}:table/rides_archive_${env}/*",
    ]
    secrets  = ["${local.arn}:secretsmanager:${local.region}:${local.account}:secret:ride-web-${env}-*"]
    database = ["${local.arn}:rds:${local.region}:${local.account}:*:rides-predictions-${env}*"]
    mlflow   = ["${local.arn}:sagemaker:${local.region}:${local.account}:mlflow-tracking-server/rides-${env}"]
  } }
  state_bucket = "${var.name_prefix}-terraform-state-${local.account}-${local.region}"
}

# -- the state bucket ---------------------------------------------------------------------------
resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_18:Access logging needs a log bucket per account; enable it at the organisation level.
  #checkov:skip=CKV_AWS_144:The state is versioned; cross-region replication is an organisation's disaster-recovery choice.
  #checkov:skip=CKV2_AWS_62:Nothing consumes S3 event notifications of the state bucket.
  #checkov:skip=CKV_AWS_145:SSE-S3 is enough for state that holds no secrets (RDS keeps the database password in Secrets Manager).
  #checkov:skip=CKV2_AWS_61:State versions are kept: a lifecycle rule would delete the history an operator rolls back with.
  bucket = local.state_bucket
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "TlsOnly"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.state.arn, "${aws_s3_bucket.state.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })
}

# -- who may deploy: GitHub Actions, one role per environment -----------------------------------
resource "aws_iam_openid_connect_provider" "github" {
  count          = var.create_github_oidc_provider ? 1 : 0
  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
}

locals {
  oidc_provider_arn = (var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn :
  "${local.arn}:iam::${local.account}:oidc-provider/token.actions.githubusercontent.com")
}

data "aws_iam_policy_document" "trust" {
  for_each = var.environments
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }
    # Only jobs of this repository running in this GitHub environment (protected for prod).
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = ["repo:${var.github_repository}:environment:${each.value.github_environment}"]
    }
  }
}

resource "aws_iam_role" "deploy" {
  for_each             = var.environments
  name                 = "rides-deploy-${each.key}"
  description          = "scripts/deploy.sh for ${each.key}, assumed by ${var.github_repository}'s ${each.value.github_environment} jobs"
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "deploy" {
  for_each = var.environments
  name     = "deploy"
  role     = aws_iam_role.deploy[each.key].id
  policy   = data.aws_iam_policy_document.deploy[each.key].json
}
