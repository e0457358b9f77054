#!/usr/bin/env bash
# Starts the same training command on every worker (each becomes one JAX process; they find
# each other through the TPU metadata: JAXDISCO_DISTRIBUTED=auto). Output goes to
# ~/jaxdisco-train.log on each worker; only process 0 prints progress.
#
#   launch/train_tpu.sh --name w2v2 --zone us-east5-a -- \
#     --config configs/wav2vec2_large.py --workdir gs://BUCKET/runs/w2v2_large \
#     --config.data.train_manifest=gs://BUCKET/librilight/prepared
#
# Flags: --name, --zone, --project (see _common.sh); everything after -- goes to
# `jaxdisco pretrain`. The workdir must be shared by all workers (a gs:// bucket): every
# process writes its own checkpoint shards there. Re-running the same command resumes.
source "$(dirname "$0")/_common.sh"
ARGS=()
while [[ $# -gt 0 && "$1" != "--" ]]; do ARGS+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
parse_common "${ARGS[@]+"${ARGS[@]}"}"
TRAIN_ARGS="$(printf ' %q' "$@")"
on_all_workers "cd ~/jaxdisco && JAXDISCO_DISTRIBUTED=auto nohup ~/venv/bin/jaxdisco pretrain \
  $TRAIN_ARGS > ~/jaxdisco-train.log 2>&1 < /dev/null & echo \$! > ~/jaxdisco-train.pid"
echo "Started on all workers. Follow with: launch/logs_tpu.sh --name $NAME --zone $ZONE"
