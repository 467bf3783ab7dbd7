# On top of vars/stg.tfvars for an emulator (make integration-test-docker): the local stack's
# plain names, aliases moved directly (the emulators here have no CodeDeploy) and no Aurora.
plain_names            = true
deployment_config_name = null
batch_database         = false
