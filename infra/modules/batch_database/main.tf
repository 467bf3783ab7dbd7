# The batch job's predictions database and the network it needs: Aurora Serverless v2
# PostgreSQL in private subnets of a VPC of its own. The master password is generated, stored
# and rotated by RDS in Secrets Manager (manage_master_user_password): it is never in Terraform's
# variables, an output or the function's environment. The job runs in the same private subnets
# and reaches S3 through a gateway endpoint, Secrets Manager through an interface endpoint, and
# (nat_gateway, for the monthly download of the public TLC files) the internet through one NAT.

variable "name" {
  type        = string
  description = "Cluster identifier; names the VPC, subnets and security groups too."
}

variable "cidr_block" {
  type        = string
  description = "The VPC's address range."
  default     = "10.42.0.0/16"
}

variable "engine_version" {
  type        = string
  description = "Aurora PostgreSQL version (Serverless v2 scales to zero from 16.3)."
  default     = "16.6"
}

variable "min_capacity" {
  type        = number
  description = "Minimum Aurora capacity units; 0 pauses the database when idle."
  default     = 0
}

variable "max_capacity" {
  type        = number
  description = "Maximum Aurora capacity units."
  default     = 4
}

variable "seconds_until_auto_pause" {
  type        = number
  description = "Idle seconds before a min_capacity = 0 database pauses."
  default     = 900
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to destroy the cluster (prod: true)."
  default     = true
}

variable "backup_retention_days" {
  type        = number
  description = "Automated backups kept (days)."
  default     = 7
}

variable "nat_gateway" {
  type        = bool
  description = "Internet access for the job (the TLC download): one NAT gateway. Off: S3 and Secrets Manager only."
  default     = true
}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first two zone names are used; a zone AWS adds later sorts after them.
  state = "available"
}

data "aws_region" "current" {}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 2)
}

# -- network ------------------------------------------------------------------------------------
resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11:Flow logs are an account-level choice (a central log bucket); nothing here accepts inbound traffic.
  cidr_block           = var.cidr_block
  enable_dns_support   = true
  enable_dns_hostnames = true # interface endpoints resolve through private DNS
  tags                 = { Name = var.name }
}

# The default security group of the VPC allows nothing (CKV2_AWS_12).
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
}

resource "aws_subnet" "private" {
  count             = length(local.azs)
  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.cidr_block, 4, count.index)
  tags              = { Name = "${var.name}-private-${local.azs[count.index]}" }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.name}-private" }
}

resource "aws_route_table_association" "private" {
  count          = length(aws_subnet.private)
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${data.aws_region.current.id}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
}

resource "aws_vpc_endpoint" "secretsmanager" {
  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${data.aws_region.current.id}.secretsmanager"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true
}

# Only for the internet download: a public subnet with the NAT gateway.
resource "aws_internet_gateway" "this" {
  count  = var.nat_gateway ? 1 : 0
  vpc_id = aws_vpc.this.id
  tags   = { Name = var.name }
}

resource "aws_subnet" "public" {
  count             = var.nat_gateway ? 1 : 0
  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[0]
  cidr_block        = cidrsubnet(var.cidr_block, 4, 15)
  tags              = { Name = "${var.name}-public" }
}

resource "aws_route_table" "public" {
  count  = var.nat_gateway ? 1 : 0
  vpc_id = aws_vpc.this.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this[0].id
  }
  tags = { Name = "${var.name}-public" }
}

resource "aws_route_table_association" "public" {
  count          = var.nat_gateway ? 1 : 0
  subnet_id      = aws_subnet.public[0].id
  route_table_id = aws_route_table.public[0].id
}

resource "aws_eip" "nat" {
  #checkov:skip=CKV2_AWS_19:The address belongs to the NAT gateway below, not to an instance.
  count  = var.nat_gateway ? 1 : 0
  domain = "vpc"
}

resource "aws_nat_gateway" "this" {
  count         = var.nat_gateway ? 1 : 0
  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
  depends_on    = [aws_internet_gateway.this]
}

resource "aws_route" "private_internet" {
  count                  = var.nat_gateway ? 1 : 0
  route_table_id         = aws_route_table.private.id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[0].id
}

# -- security groups: the job may reach the database and the endpoints, nothing reaches the job --
resource "aws_security_group" "job" {
  #checkov:skip=CKV2_AWS_5:Attached to the batch job's Lambda (modules/batch_job vpc_config), outside this module.
  name        = "${var.name}-job"
  description = "The batch job: out to the database, the endpoints and (with the NAT) HTTPS."
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "database" {
  name        = "${var.name}-database"
  description = "Aurora: PostgreSQL from the batch job only."
  vpc_id      = aws_vpc.this.id
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name}-endpoints"
  description = "Interface endpoints: HTTPS from the batch job only."
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_egress_rule" "job_to_database" {
  security_group_id            = aws_security_group.job.id
  description                  = "PostgreSQL"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.database.id
}

resource "aws_vpc_security_group_egress_rule" "job_https" {
  security_group_id = aws_security_group.job.id
  description       = "HTTPS: the endpoints, S3 and (with the NAT) the TLC download"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "database_from_job" {
  security_group_id            = aws_security_group.database.id
  description                  = "PostgreSQL from the batch job"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = aws_security_group.job.id
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_job" {
  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS from the batch job"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.job.id
}

# -- the database -------------------------------------------------------------------------------
resource "aws_db_subnet_group" "this" {
  name       = var.name
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_rds_cluster_parameter_group" "this" {
  name   = var.name
  family = "aurora-postgresql${split(".", var.engine_version)[0]}"
  parameter {
    name  = "rds.force_ssl" # TLS or nothing (the job connects with sslmode=require)
    value = "1"
  }
  parameter {
    name  = "log_statement" # schema changes, not every upsert
    value = "ddl"
  }
  parameter {
    name  = "log_min_duration_statement" # and any statement slower than a second
    value = "1000"
  }
}

resource "aws_rds_cluster" "this" {
  #checkov:skip=CKV_AWS_327:Encrypted at rest with the AWS-managed RDS key; a customer-managed key is an account-level choice.
  #checkov:skip=CKV_AWS_139:deletion_protection is on in prod (var.deletion_protection); staging and test environments must be destroyable.
  #checkov:skip=CKV2_AWS_8:AWS Backup plans are an account-level choice; automated backups are kept backup_retention_days.
  cluster_identifier                  = var.name
  engine                              = "aurora-postgresql"
  engine_mode                         = "provisioned"
  engine_version                      = var.engine_version
  database_name                       = "rides"
  master_username                     = "rides"
  manage_master_user_password         = true
  db_subnet_group_name                = aws_db_subnet_group.this.name
  db_cluster_parameter_group_name     = aws_rds_cluster_parameter_group.this.name
  vpc_security_group_ids              = [aws_security_group.database.id]
  storage_encrypted                   = true
  iam_database_authentication_enabled = true
  backup_retention_period             = var.backup_retention_days
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.deletion_protection
  skip_final_snapshot                 = !var.deletion_protection
  final_snapshot_identifier           = var.deletion_protection ? "${var.name}-final" : null
  enabled_cloudwatch_logs_exports     = ["postgresql"]

  serverlessv2_scaling_configuration {
    min_capacity             = var.min_capacity
    max_capacity             = var.max_capacity
    seconds_until_auto_pause = var.min_capacity == 0 ? var.seconds_until_auto_pause : null
  }
}

resource "aws_rds_cluster_instance" "this" {
  #checkov:skip=CKV_AWS_118:Enhanced monitoring costs per instance; CloudWatch's RDS metrics and the exported logs cover a monthly job.
  #checkov:skip=CKV_AWS_354:Performance Insights uses the AWS-managed key.
  identifier                   = "${var.name}-1"
  cluster_identifier           = aws_rds_cluster.this.id
  instance_class               = "db.serverless"
  engine                       = aws_rds_cluster.this.engine
  engine_version               = aws_rds_cluster.this.engine_version
  db_subnet_group_name         = aws_db_subnet_group.this.name
  auto_minor_version_upgrade   = true
  performance_insights_enabled = true
}

output "connection" {
  description = "What the job needs to connect: the address, and the secret that holds the user and password."
  value = {
    host       = aws_rds_cluster.this.endpoint
    port       = tostring(aws_rds_cluster.this.port)
    name       = aws_rds_cluster.this.database_name
    secret_arn = aws_rds_cluster.this.master_user_secret[0].secret_arn
  }
}

output "job_network" {
  description = "Where the job runs: the private subnets and its security group."
  value = {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.job.id]
  }
}
