# The GitHub side of the bootstrap: the environments cd.yml runs in, with the secrets and
# variables it reads. Its provider (integrations/github) comes from the registry: validated in
# GitHub Actions (ci.yml), formatted here. GITHUB_TOKEN with admin rights on the repository.
terraform {
  required_version = ">= 1.10.0"
  required_providers {
    github = {
      source  = "integrations/github"
      version = ">= 6.0, < 7"
    }
  }
}

provider "github" {
  owner = split("/", var.github_repository)[0]
}
