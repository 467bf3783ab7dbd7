environment = "stg"
