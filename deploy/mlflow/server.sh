#!/bin/sh
# MLflow tracking server for lgsid_pipeline: runs, metrics and the model registry in
# PostgreSQL; artifacts (model folders, plots) in an object store, proxied by the server
# (--serve-artifacts), so clients need no bucket credentials, only LGSID_MLFLOW_TRACKING_URI.
# Environment (see server.env.example; in Kubernetes from the Secret `lgsid-mlflow`):
#   MLFLOW_BACKEND_STORE_URI  postgresql+psycopg2://USER:PASSWORD@HOST:5432/mlflow
#   MLFLOW_ARTIFACTS_DESTINATION  s3://BUCKET/mlflow
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (, MLFLOW_S3_ENDPOINT_URL for non-AWS stores)
#   MLFLOW_ALLOWED_HOSTS  Host headers clients use, e.g. lgsid-mlflow,lgsid-mlflow:5000
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql+psycopg2://...)}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://BUCKET/mlflow)}"
exec mlflow server \
    --host 0.0.0.0 \
    --port "${MLFLOW_PORT:-5000}" \
    --workers "${MLFLOW_WORKERS:-2}" \
    --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --serve-artifacts \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-lgsid-mlflow,lgsid-mlflow:5000,localhost:*}"
