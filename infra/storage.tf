# Where models, MLflow, images, dead letters, reviews, decisions and evaluations are kept.

module "model_bucket" {
  source = "./modules/model_bucket"
  name   = local.model_bucket_name
}

# MLflow's tracking server and registry for this environment. Prod has none of its own: in the
# same account it shares staging's (and reads staging's bucket); in an account of its own it
# serves the versions staging exported, recorded in the deploy record.
module "mlflow" {
  source = "./modules/mlflow"
  count  = var.mlflow_tracking_server ? 1 : 0

  name            = local.names.mlflow_tracking_server
  artifact_bucket = module.model_bucket.name
}

module "ecr" {
  source          = "./modules/ecr_repository"
  name            = local.names.ecr_repository
  reader_accounts = var.image_reader_accounts
}

module "dead_letter_queue" {
  source = "./modules/queue"
  name   = local.names.dead_letter_queue
}

module "failed_batches_queue" {
  source = "./modules/queue"
  name   = local.names.failed_batches_queue
}

# Rides the decision service decided `review`, with the decision and its flags, for a person
# to act on (`rides review`); an alarm when one waits longer than review_max_age_seconds.
module "review_queue" {
  source = "./modules/queue"
  name   = local.names.review_queue
}

module "evaluations_table" {
  source = "./modules/evaluations_table"
  name   = local.names.evaluations_table
}

module "decisions_table" {
  source = "./modules/decisions_table"
  name   = local.names.decisions_table
}
