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


def create_engine(url: str):
    """A SQLAlchemy engine for SQLite or PostgreSQL, set up for the batch job's transactions.

    Positional parameters (qmark for SQLite, format for psycopg), so hot paths send rows as
    tuples. SQLite: WAL (readers do not block the writer) and `BEGIN IMMEDIATE`, so a
    transaction that reads a watermark holds the write lock from its first statement and two
    runs cannot both read the same watermark (pysqlite's own deferred BEGIN would let them).
    """
    import sqlalchemy as sa

    if url.startswith("postgresql"):
        return sa.create_engine(url, paramstyle="format")
    if not url.startswith("sqlite"):
        raise DatabaseConfigError(f"database {url.split(':', 1)[0]!r} is not supported (sqlite or postgresql)")
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def placeholder(engine) -> str:
    """The driver's positional parameter marker."""
    return "?" if engine.dialect.name == "sqlite" else "%s"


def insert_sql(engine, table, keys: tuple[str, ...], *, update: bool, columns: list[str] | None = None) -> str:
    """INSERT … ON CONFLICT (keys) DO UPDATE (update=True) or DO NOTHING, compiled once to the
    driver's SQL with positional parameters for `columns` (default: all), in that order."""
    columns = columns or [c.name for c in table.columns]
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(table)
    if update:
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    compiled = statement.compile(
        dialect=engine.dialect, column_keys=columns, compile_kwargs={"render_postcompile": True}
    )
    if list(compiled.positiontup or ()) != columns:
        raise RuntimeError(f"unexpected parameter order for {engine.dialect.name}: {compiled.positiontup}")
    return str(compiled)


def frame_rows(frame, columns: list[str], dialect: str) -> list[tuple]:
    """DataFrame columns → tuples for the driver's executemany (NaN/NaT as NULL).

    SQLAlchemy's per-row dict handling would cost 3x the rest of the batch job."""
    import numpy as np

    values = []
    for name in columns:
        column = frame[name]
        if column.dtype.kind == "M":
            # SQLAlchemy's own SQLite DateTime format, so reads through it still work
            text = column.dt.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect == "sqlite" else column.dt.to_pydatetime()
            values.append(np.where(column.isna(), None, np.asarray(text, dtype=object)))
        elif column.dtype.kind == "f":
            array = column.to_numpy()
            values.append(np.where(np.isnan(array), None, array.astype(object)))
        else:
            values.append(column.to_numpy(dtype=object))
    return list(zip(*values, strict=True))


SCHEMA_LOCK = 7_140_917  # any fixed number: the advisory lock our jobs take to create tables


def create_tables(engine, metadata) -> None:
    """CREATE TABLE IF NOT EXISTS for `metadata`, safe when two runs start at once (PostgreSQL
    would otherwise fail one of them on its catalog's unique index; SQLite's BEGIN IMMEDIATE
    already serializes them)."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        metadata.create_all(connection)
        add_missing_columns(connection, metadata)


def add_missing_columns(connection, metadata) -> None:
    """A table made by an older release gets the nullable columns added since (the rides
    table's payment_type): ALTER TABLE … ADD COLUMN, existing rows NULL."""
    import sqlalchemy as sa

    inspector = sa.inspect(connection)
    for table in metadata.sorted_tables:
        there = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in there and column.nullable and not column.primary_key:
                kind = column.type.compile(dialect=connection.dialect)
                name = connection.dialect.identifier_preparer.quote(column.name)
                connection.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}")
