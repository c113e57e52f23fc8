-- One Postgres, one database per server.
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
