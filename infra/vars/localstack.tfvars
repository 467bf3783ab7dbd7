# On top of vars/stg.tfvars for an emulator (make integration-test-docker): the local stack's
# plain names, and aliases moved directly, as the emulators here have no CodeDeploy.
plain_names            = true
deployment_config_name = null
