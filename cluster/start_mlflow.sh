#!/usr/bin/env bash
# Starts the cluster's MLflow tracking server on the Ray head (cluster launcher), unless it is
# already running, and waits until it answers. Run metadata: sqlite on the head's disk (copy it
# down before `ray down`, see cluster/README.md); artifacts: proxied by the server to ARTIFACTS_URI,
# so workers need no bucket credentials for them.
#
#   bash ~/robustmsa-deps/cluster/start_mlflow.sh s3://your-bucket/robustmsa/mlflow-artifacts
#
# The server listens on 0.0.0.0:5000 so that workers reach it at http://<head private IP>:5000;
# keep that port closed to the internet (Ray's default security group / GCP's default firewall
# only open it inside the cluster's network). MLflow accepts Host headers of localhost and
# private IPs by default. Environment overrides: MLFLOW_BACKEND_STORE_URI, MLFLOW_PORT,
# MLFLOW_HOME_DIR (default ~/mlflow: database, log, pid file), MLFLOW_APP_NAME=basic-auth
# (MLflow's user/password authentication; clients then set MLFLOW_TRACKING_USERNAME and
# MLFLOW_TRACKING_PASSWORD, see README.md "Security").
set -euo pipefail

artifacts="${1:?usage: start_mlflow.sh ARTIFACTS_URI (s3://... or gs://...)}"
home_dir="${MLFLOW_HOME_DIR:-$HOME/mlflow}"
port="${MLFLOW_PORT:-5000}"
store="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$home_dir/mlflow.db}"
pidfile="$home_dir/server.pid"
log="$home_dir/server.log"
mkdir -p "$home_dir"

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "MLflow server already running (pid $(cat "$pidfile"), log $log)"
  exit 0
fi

app=()
if [ -n "${MLFLOW_APP_NAME:-}" ]; then app=(--app-name "$MLFLOW_APP_NAME"); fi

MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid nohup mlflow server "${app[@]}" \
  --backend-store-uri "$store" \
  --serve-artifacts --artifacts-destination "$artifacts" \
  --host 0.0.0.0 --port "$port" --workers 2 >>"$log" 2>&1 </dev/null &
echo $! >"$pidfile"

for _ in $(seq 90); do
  if python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=2)" \
    2>/dev/null; then
    echo "MLflow server on port $port (pid $(cat "$pidfile"), store $store, log $log)"
    exit 0
  fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "MLflow server exited; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  sleep 2
done
echo "MLflow server did not answer on port $port within 180 s; see $log" >&2
exit 1
