-- One database per service on the shared PostgreSQL (run once, on an empty data volume).
CREATE DATABASE prefect;
CREATE DATABASE mlflow;
CREATE DATABASE fleet;
CREATE DATABASE webhook;
