#!/usr/bin/env bash
# Streams the training log of worker 0 (process 0 prints progress, metrics and eval).
#
#   launch/logs_tpu.sh --name w2v2 --zone us-east5-a [--worker N] [--lines K]
#
# Flags: --name, --zone, --project (see _common.sh);
#   --worker N    another worker's log (errors of process N show up only there)
#   --lines K     lines of history before following (default 100)
source "$(dirname "$0")/_common.sh"
WORKER=0; LINES=100
parse_common "$@"
set -- "${EXTRA[@]+"${EXTRA[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --worker) WORKER="$2"; shift 2 ;;
    --lines) LINES="$2"; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker="$WORKER" \
  --command="tail -n $LINES -F ~/jaxdisco-train.log"
