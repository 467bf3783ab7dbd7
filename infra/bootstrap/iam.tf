# The deploy role's permissions: Terraform creating, changing and destroying one environment of
# infra/, and what scripts/deploy.sh runs besides (the image pushes and copies, `rides release`,
# `rides smoke`, `rides promote`, `rides models export/import`). Each statement is scoped to the
# environment's resources by their names; the few actions AWS defines on no resource (marked)
# are limited to this region. tests/test_bootstrap.py holds it to the calls the deploy makes and
# to every resource type of the plan.
data "aws_iam_policy_document" "deploy" {
  #checkov:skip=CKV_AWS_109:Resource-level permissions are scoped by the environment's names; "*" only where AWS defines no resource, limited to the region.
  #checkov:skip=CKV_AWS_111:Writes are scoped to the environment's resources by name; "*" only where AWS defines no resource, limited to the region.
  #checkov:skip=CKV_AWS_356:"*" only for actions AWS defines on no resource (CreateKey, GetAuthorizationToken, EC2's VPC calls, ...), limited to the region.
  #checkov:skip=CKV_AWS_107:The deploy role reads the API keys' secret it creates; scoped to ride-web-<env>-*.
  #checkov:skip=CKV_AWS_108:s3:GetObject is scoped to the state keys and the environment's own model bucket.
  #checkov:skip=CKV_AWS_110:iam:PassRole and role management are scoped to the environment's role names.
  for_each = var.environments

  statement {
    sid       = "State"
    actions   = ["s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${local.arn}:s3:::${local.state_bucket}", "${local.arn}:s3:::${local.state_bucket}/rides/${each.key}/*"]
  }
  statement {
    sid       = "Streams"
    actions   = ["kinesis:*"]
    resources = local.scope[each.key].kinesis
  }
  statement {
    sid       = "Functions"
    actions   = ["lambda:*"]
    resources = local.scope[each.key].functions
  }
  statement {
    # AWS defines these on no resource (the mapping's function is the condition).
    sid       = "EventSourceMappings"
    actions   = ["lambda:CreateEventSourceMapping", "lambda:ListEventSourceMappings", "lambda:GetAccountSettings"]
    resources = ["*"]
  }
  statement {
    sid       = "EventSourceMappingsOfThisEnvironment"
    actions   = ["lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping", "lambda:DeleteEventSourceMapping", "lambda:TagResource", "lambda:ListTags"]
    resources = ["arn:${local.partition}:lambda:${local.region}:${local.account}:event-source-mapping:*"]
    condition {
      test     = "StringLike"
      variable = "lambda:FunctionArn"
      values   = local.scope[each.key].functions
    }
  }
  statement {
    sid       = "RolesOfThisEnvironment"
    actions   = ["iam:*Role", "iam:*RolePolicy", "iam:*RolePolicies", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:ListAttachedRolePolicies", "iam:ListInstanceProfilesForRole", "iam:TagRole", "iam:UntagRole", "iam:PassRole"]
    resources = local.scope[each.key].roles
  }
  statement {
    sid       = "ProducerPolicy"
    actions   = ["iam:*Policy", "iam:*PolicyVersion", "iam:ListPolicyVersions", "iam:TagPolicy"]
    resources = ["${local.arn}:iam::${local.account}:policy/rides-producer-${each.key}"]
  }
  statement {
    sid       = "ServiceLinkedRoles"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["${local.arn}:iam::${local.account}:role/aws-service-role/*"]
    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["rds.amazonaws.com", "sagemaker.amazonaws.com"]
    }
  }
  statement {
    sid       = "ReadManagedPolicies"
    actions   = ["iam:GetPolicy", "iam:GetPolicyVersion"]
    resources = ["${local.arn}:iam::aws:policy/*"]
  }
  statement {
    sid       = "QueuesTablesBucket"
    actions   = ["sqs:*", "dynamodb:*", "s3:*"]
    resources = concat(local.scope[each.key].queues, local.scope[each.key].tables, local.scope[each.key].buckets)
  }
  statement {
    # `rides promote` and the smoke test read models staging validated (prod in staging's account).
    sid       = "ReadStagingsModels"
    actions   = ["s3:GetObject", "s3:ListBucket"]
    resources = ["${local.arn}:s3:::${var.name_prefix}-models-stg-${local.account}-${local.region}", "${local.arn}:s3:::${var.name_prefix}-models-stg-${local.account}-${local.region}/mlflow/*"]
  }
  statement {
    sid       = "ImageRepository"
    actions   = ["ecr:*"]
    resources = [local.scope[each.key].repository]
  }
  statement {
    # Prod copies staging's images by digest (docker buildx imagetools create).
    sid       = "PullStagingsImages"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability", "ecr:DescribeImages"]
    resources = ["${local.arn}:ecr:${local.region}:${coalesce(var.staging_account_id, local.account)}:repository/ride-duration-consumer-stg"]
  }
  statement {
    sid       = "Monitoring"
    actions   = ["sns:*", "cloudwatch:*Alarm*", "cloudwatch:TagResource", "cloudwatch:ListTagsForResource", "logs:*"]
    resources = local.scope[each.key].monitoring
  }
  statement {
    sid       = "Releases"
    actions   = ["codedeploy:*"]
    resources = local.scope[each.key].codedeploy
  }
  statement {
    sid       = "SchedulesArchiveSecretsDatabaseMlflow"
    actions   = ["events:*", "firehose:*", "glue:*", "secretsmanager:*", "rds:*", "sagemaker:*MlflowTrackingServer*", "sagemaker:AddTags", "sagemaker:ListTags", "sagemaker-mlflow:*"]
    resources = concat(local.scope[each.key].events, local.scope[each.key].firehose, local.scope[each.key].glue, local.scope[each.key].secrets, local.scope[each.key].database, local.scope[each.key].mlflow)
  }
  statement {
    # AWS defines these on no resource; the keys the apply makes carry the environment's tag.
    sid       = "NoResourceLevelPermissions"
    actions   = ["sts:GetCallerIdentity", "ecr:GetAuthorizationToken", "kms:CreateKey", "kms:ListAliases", "logs:DescribeLogGroups", "cloudwatch:DescribeAlarms", "sns:ListTopics", "rds:DescribeDBEngineVersions", "codedeploy:GetDeploymentConfig", "sagemaker:ListMlflowTrackingServers"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [local.region]
    }
  }
  statement {
    sid       = "KeysOfThisEnvironment"
    actions   = ["kms:*"]
    resources = ["${local.arn}:kms:${local.region}:${local.account}:key/*", "${local.arn}:kms:${local.region}:${local.account}:alias/rides-*-${each.key}"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/environment"
      values   = [each.key]
    }
  }
  statement {
    sid       = "AliasesOfThisEnvironment"
    actions   = ["kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"]
    resources = ["${local.arn}:kms:${local.region}:${local.account}:alias/rides-*-${each.key}"]
  }
  statement {
    # The batch database's network: EC2's VPC calls take few resource-level limits; kept to the region.
    sid       = "DatabaseNetwork"
    actions   = ["ec2:*Vpc*", "ec2:*Subnet*", "ec2:*RouteTable*", "ec2:*Route", "ec2:*InternetGateway*", "ec2:*NatGateway*", "ec2:*Address*", "ec2:*SecurityGroup*", "ec2:*Tags", "ec2:Describe*", "ec2:*NetworkInterface*"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [local.region]
    }
  }
}
