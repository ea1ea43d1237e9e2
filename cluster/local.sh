#!/usr/bin/env bash
# A daskcap cluster on this machine: a scheduler, CPU workers and engine workers,
# each started as its own process group so `stop` leaves nothing behind.
#
#   cluster/local.sh start [--cpu-workers N] [--engine-workers N] [--port PORT] [--dir DIR] [--tls]
#   cluster/local.sh address [--dir DIR]
#   cluster/local.sh stop [--dir DIR]
#
# Engine workers advertise GPU=1 (model stages run only there). With NVIDIA GPUs
# and dask-cuda installed they are `dask cuda worker` (one per GPU); otherwise
# `dask worker` processes (default 1). They run non-daemonic, as vLLM needs.
#
# Plain TCP listens on every interface: whoever reaches the port runs code on the
# workers. --tls makes a CA, certificate and key in DIR/tls (`daskcap tls-certs`),
# and the scheduler and workers then accept only clients holding them:
#   daskcap run ... --scheduler tls://HOST:PORT --tls-ca-file DIR/tls/ca.pem --tls-cert DIR/tls/cert.pem --tls-key DIR/tls/key.pem
set -euo pipefail

command=${1:-}
shift || true
cpu_workers=$(nproc 2>/dev/null || echo 2)
engine_workers=""
port=8786
state=".daskcap-cluster"
tls=0
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu-workers) cpu_workers=$2; shift 2 ;;
    --engine-workers) engine_workers=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --dir) state=$2; shift 2 ;;
    --tls) tls=1; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

bin_dir=$(dirname "$(command -v python3)")
[ -n "${VIRTUAL_ENV:-}" ] && bin_dir="$VIRTUAL_ENV/bin"
[ -x "$(dirname "$0")/../.venv/bin/dask" ] && [ -z "${VIRTUAL_ENV:-}" ] && bin_dir="$(cd "$(dirname "$0")/../.venv/bin" && pwd)"
dask="$bin_dir/dask"
python="$bin_dir/python"

launch() {  # launch NAME COMMAND...: own session (process group), pid and log in $state
  local name=$1; shift
  setsid "$@" >"$state/$name.log" 2>&1 < /dev/null &
  echo $! >"$state/$name.pid"
}

case "$command" in
  start)
    if [ -f "$state/scheduler.pid" ] && kill -0 "$(cat "$state/scheduler.pid")" 2>/dev/null; then
      echo "a cluster is already running from $state (cluster/local.sh stop --dir $state)" >&2; exit 1
    fi
    mkdir -p "$state"
    rm -f "$state"/*.pid "$state/scheduler.json"
    tls_args=()
    if [ "$tls" -eq 1 ]; then
      [ -f "$state/tls/key.pem" ] || "$python" -m daskcap.cli tls-certs "$state/tls" >/dev/null
      tls_args=(--tls-ca-file "$state/tls/ca.pem" --tls-cert "$state/tls/cert.pem" --tls-key "$state/tls/key.pem")
      launch scheduler "$dask" scheduler --protocol tls --port "$port" --dashboard-address :0 --scheduler-file "$state/scheduler.json" "${tls_args[@]}"
    else
      launch scheduler "$dask" scheduler --port "$port" --dashboard-address :0 --scheduler-file "$state/scheduler.json"
    fi
    for _ in $(seq 100); do [ -s "$state/scheduler.json" ] && break; sleep 0.2; done
    [ -s "$state/scheduler.json" ] || { echo "the scheduler did not start; see $state/scheduler.log" >&2; exit 1; }
    if [ "$cpu_workers" -gt 0 ]; then
      launch cpu-workers "$dask" worker --scheduler-file "$state/scheduler.json" --nworkers "$cpu_workers" --nthreads 1 --name cpu ${tls_args[@]+"${tls_args[@]}"}
    fi
    gpus=0
    command -v nvidia-smi >/dev/null 2>&1 && gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    if [ "$gpus" -gt 0 ] && "$python" -c "import dask_cuda" 2>/dev/null; then
      expected_engines=${engine_workers:-$gpus}
      DASK_DISTRIBUTED__WORKER__DAEMON=False launch engine-workers \
        "$dask" cuda worker --scheduler-file "$state/scheduler.json" --resources GPU=1 --nthreads 4 --name engine ${tls_args[@]+"${tls_args[@]}"}
    else
      expected_engines=${engine_workers:-1}
      if [ "$expected_engines" -gt 0 ]; then
        DASK_DISTRIBUTED__WORKER__DAEMON=False launch engine-workers \
          "$dask" worker --scheduler-file "$state/scheduler.json" --nworkers "$expected_engines" --nthreads 4 \
          --resources GPU=1 --name engine ${tls_args[@]+"${tls_args[@]}"}
      fi
    fi
    total=$((cpu_workers + expected_engines))
    "$python" - "$state/scheduler.json" "$total" "$tls" "$state/tls" <<'PY'
import sys
from distributed import Client
from distributed.security import Security
tls = f"{sys.argv[4]}/"
security = Security(tls_ca_file=tls + "ca.pem", tls_client_cert=tls + "cert.pem", tls_client_key=tls + "key.pem",
                    require_encryption=True) if sys.argv[3] == "1" else None
with Client(scheduler_file=sys.argv[1], timeout="30s", security=security) as client:
    client.wait_for_workers(int(sys.argv[2]), timeout=120)
PY
    address=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['address'])" "$state/scheduler.json")
    echo "$address" >"$state/address"
    echo "$address"
    ;;
  address)
    cat "$state/address"
    ;;
  stop)
    [ -d "$state" ] || { echo "no cluster state in $state" >&2; exit 1; }
    # Workers first (their nannies close them), then the scheduler.
    for name in engine-workers cpu-workers scheduler; do
      [ -f "$state/$name.pid" ] && kill -TERM -- "-$(cat "$state/$name.pid")" 2>/dev/null || true
    done
    for _ in $(seq 100); do
      alive=0
      for pidfile in "$state"/*.pid; do
        [ -f "$pidfile" ] && kill -0 -- "-$(cat "$pidfile")" 2>/dev/null && alive=1
      done
      [ "$alive" -eq 0 ] && break
      sleep 0.2
    done
    for pidfile in "$state"/*.pid; do
      [ -f "$pidfile" ] && kill -KILL -- "-$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    done
    rm -f "$state/address" "$state/scheduler.json"
    echo "stopped"
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
