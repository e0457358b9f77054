#!/usr/bin/env bash
# Stops training on every worker with SIGTERM, as a preemption does: the processes agree on a
# step, save a checkpoint and exit cleanly. Optionally deletes the TPU afterwards.
#
#   launch/stop_tpu.sh --name w2v2 --zone us-east5-a [--delete] [--queued]
#
# Flags: --name, --zone, --project (see _common.sh);
#   --delete      delete the TPU VM (after the save finished) -- billing stops
#   --queued      it was created with --queued: delete the queued resource too
#   --wait S      seconds to wait for the save before deleting (default 120)
source "$(dirname "$0")/_common.sh"
DELETE=0; QUEUED=0; WAIT=120
parse_common "$@"
set -- "${EXTRA[@]+"${EXTRA[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --delete) DELETE=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --wait) WAIT="$2"; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
# Only our own trainer: the pid train_tpu.sh recorded on each worker.
on_all_workers "pid=\$(cat ~/jaxdisco-train.pid 2>/dev/null) || exit 0; kill -TERM \$pid 2>/dev/null; \
  for i in \$(seq $WAIT); do kill -0 \$pid 2>/dev/null || break; sleep 1; done; \
  tail -n 3 ~/jaxdisco-train.log" || true
if [[ $DELETE == 1 ]]; then
  if [[ $QUEUED == 1 ]]; then
    gcloud compute tpus queued-resources delete "$NAME" "${GCLOUD_FLAGS[@]}" --force --quiet
  else
    gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_FLAGS[@]}" --quiet
  fi
fi
