# How a new version reaches the functions: CodeDeploy (canary in prod, all at once in staging).

# The rollout: each apply publishes a version of every function; scripts/deploy.sh then runs
# `rides release`, which shifts each `live` alias to it through CodeDeploy (canary in prod,
# all at once in staging), stopped and rolled back by the function's alarms. With
# deployment_config_name = null (the local stack, which has no CodeDeploy) the release moves the
# aliases directly.
locals {
  rollout = {
    deployment_config_name = var.deployment_config_name
    codedeploy_app_name    = one(aws_codedeploy_app.this[*].name)
    codedeploy_role_arn    = one(aws_iam_role.codedeploy[*].arn)
  }
}

resource "aws_codedeploy_app" "this" {
  count            = var.deployment_config_name == null ? 0 : 1
  name             = "rides${local.suffix}"
  compute_platform = "Lambda"
}

data "aws_iam_policy_document" "codedeploy_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["codedeploy.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "codedeploy" {
  count              = var.deployment_config_name == null ? 0 : 1
  name               = "rides-codedeploy${local.suffix}"
  assume_role_policy = data.aws_iam_policy_document.codedeploy_assume.json
}

resource "aws_iam_role_policy_attachment" "codedeploy" {
  count = var.deployment_config_name == null ? 0 : 1
  role  = aws_iam_role.codedeploy[0].name
  # Read alarms, get and update aliases: nothing else (no SNS, no S3 beyond CodeDeploy/ keys).
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited"
}
