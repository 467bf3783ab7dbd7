# Batch scoring: the scheduled job and its database.

# The monthly batch scoring job, once its image is pushed and a model promoted.
module "batch_job" {
  source = "./modules/batch_job"
  count  = var.batch_image_tag != null && local.consumers.duration.model_uri != "" ? 1 : 0

  function_name        = local.names.batch_job
  image_uri            = local.image_of[coalesce(var.batch_image_tag, "none")]
  model_uri            = local.consumers.duration.model_uri
  model_version        = local.consumers.duration.model_version
  model_bucket_arn     = local.model_bucket_arn
  output_bucket        = module.model_bucket.name
  reserved_concurrency = local.reserve ? 1 : null
  database             = one(module.batch_database[*].connection)
  network              = one(module.batch_database[*].job_network)
  log_retention_days   = var.log_retention_days
}

# Where the batch job upserts its predictions (and, for the combined mode, where rides are read).
module "batch_database" {
  source = "./modules/batch_database"
  count  = var.batch_database ? 1 : 0

  name                = local.names.batch_database
  deletion_protection = var.environment == "prod"
  nat_gateway         = var.batch_nat_gateway
}
