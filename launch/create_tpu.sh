#!/usr/bin/env bash
# Creates (or queues) a TPU VM pod slice.
#
#   launch/create_tpu.sh --name w2v2 --zone us-east5-a --type v5p-64 [--queued] [--spot]
#
# Flags: --name, --zone, --project (see _common.sh);
#   --type ACCELERATOR     e.g. v4-32, v5litepod-64, v5p-128 (required)
#   --version RUNTIME      TPU VM software version (default: tpu-ubuntu2204-base; v5e/v5p
#                          accept v2-alpha-tpuv5-lite / v2-alpha-tpuv5)
#   --queued               ask through a queued resource (waits for capacity) instead of now
#   --spot                 spot capacity (cheap, preemptible: jaxdisco saves on SIGTERM)
source "$(dirname "$0")/_common.sh"
TYPE=""; VERSION="tpu-ubuntu2204-base"; QUEUED=0; SPOT=()
parse_common "$@"
set -- "${EXTRA[@]+"${EXTRA[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --spot) SPOT=(--spot); shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
[[ -n "$TYPE" ]] || { echo "error: --type is required (e.g. v5p-64)" >&2; exit 2; }
if [[ $QUEUED == 1 ]]; then
  gcloud compute tpus queued-resources create "$NAME" "${GCLOUD_FLAGS[@]}" --node-id="$NAME" \
    --accelerator-type="$TYPE" --runtime-version="$VERSION" "${SPOT[@]+"${SPOT[@]}"}"
  echo "Queued. Watch it with: gcloud compute tpus queued-resources describe $NAME --zone=$ZONE"
else
  gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_FLAGS[@]}" \
    --accelerator-type="$TYPE" --version="$VERSION" "${SPOT[@]+"${SPOT[@]}"}"
fi
