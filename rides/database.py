"""Where the predictions table lives, from the environment.

Locally a SQLAlchemy URL (RIDES_DATABASE_URL; SQLite needs no credentials). On AWS the
database is the environment's Aurora PostgreSQL (infra/modules/batch_database) and no
credential is ever in an environment variable: the function gets the cluster's address and the
ARN of the secret RDS manages (and rotates), and reads the user name and password from Secrets
Manager when it runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from rides import RidesError

SECRET_ARN = "RIDES_DATABASE_SECRET_ARN"
HOST = "RIDES_DATABASE_HOST"
PORT = "RIDES_DATABASE_PORT"
NAME = "RIDES_DATABASE_NAME"
URL = "RIDES_DATABASE_URL"


class DatabaseConfigError(RidesError, ValueError):
    """The environment names a database it does not fully describe."""


def database_url(environ: Mapping[str, str], secrets_client=None) -> str:
    """The SQLAlchemy URL to write predictions to; "" when there is no database (parquet only)."""
    if environ.get(URL):
        return environ[URL]
    if not environ.get(SECRET_ARN):
        return ""
    missing = [name for name in (HOST, NAME) if not environ.get(name)]
    if missing:
        raise DatabaseConfigError(f"{SECRET_ARN} is set but {', '.join(missing)} is not")
    from sqlalchemy.engine import URL as SqlUrl

    credentials = read_secret(environ[SECRET_ARN], secrets_client)
    return SqlUrl.create(
        "postgresql+psycopg",
        username=credentials["username"],
        password=credentials["password"],
        host=environ[HOST],
        port=int(environ.get(PORT) or 5432),
        database=environ[NAME],
        query={"sslmode": "require"},  # Aurora speaks TLS; never send the password in clear
    ).render_as_string(hide_password=False)


def read_secret(secret_arn: str, secrets_client=None) -> dict:
    """An RDS-managed secret: {"username": ..., "password": ...}. Read on every run, as RDS rotates it."""
    import boto3

    client = secrets_client or boto3.client("secretsmanager")
    value = json.loads(client.get_secret_value(SecretId=secret_arn)["SecretString"])
    if not {"username", "password"} <= value.keys():
        raise DatabaseConfigError(f"secret {secret_arn} holds no username and password")
    return value
