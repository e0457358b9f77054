#!/usr/bin/env bash
# Creates (or queues) a TPU VM pod slice.
#
#   launch/create_tpu.sh --name w2v2 --zone us-east5-a --type v5p-64 \
#       --plan configs/wav2vec2_base.py [--plan-arg --config.data.batch_size=512] [--queued] [--spot]
#
# With --plan, `jaxdisco plan` first compiles the config's programs for that slice on this
# machine (no TPU needed: pip install 'jaxdisco[tpu]') and nothing is reserved unless they fit
# in HBM; the plan is written to plan-<name>.json. --plan-arg passes one more argument to it
# (repeat it: config overrides, --num-slices N, --programs=train). --no-plan skips the check.
#
# Flags: --name, --zone, --project (see _common.sh);
#   --type ACCELERATOR     e.g. v4-32, v5litepod-64, v5p-128 (required)
#   --version RUNTIME      TPU VM software version (default: tpu-ubuntu2204-base; v5e/v5p
#                          accept v2-alpha-tpuv5-lite / v2-alpha-tpuv5)
#   --queued               ask through a queued resource (waits for capacity) instead of now
#   --spot                 spot capacity (cheap, preemptible: jaxdisco saves on SIGTERM)
#   --plan CONFIG          refuse to reserve a slice the config does not fit (see above)
source "$(dirname "$0")/_common.sh"
TYPE=""; VERSION="tpu-ubuntu2204-base"; QUEUED=0; SPOT=(); PLAN=""; PLAN_ARGS=(); NO_PLAN=0
parse_common "$@"
set -- "${EXTRA[@]+"${EXTRA[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --spot) SPOT=(--spot); shift ;;
    --plan) PLAN="$2"; shift 2 ;;
    --plan-arg) PLAN_ARGS+=("$2"); shift 2 ;;
    --no-plan) NO_PLAN=1; shift ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
[[ -n "$TYPE" ]] || { echo "error: --type is required (e.g. v5p-64)" >&2; exit 2; }
if [[ -z "$PLAN" && $NO_PLAN == 0 ]]; then
  echo "error: give --plan CONFIG (checks the config fits $TYPE before reserving it) or --no-plan" >&2
  exit 2
fi
if [[ -n "$PLAN" ]]; then
  echo "Checking that $PLAN fits $TYPE before reserving it (jaxdisco plan) ..."
  if ! "${PYTHON:-python3}" -m jaxdisco.cli plan --config="$PLAN" --topology="$TYPE" \
      --out="plan-$NAME.json" "${PLAN_ARGS[@]+"${PLAN_ARGS[@]}"}"; then
    echo "error: not reserving $TYPE: jaxdisco plan did not pass for $PLAN (above: what to change)" >&2
    exit 3
  fi
fi
if [[ $QUEUED == 1 ]]; then
  gcloud compute tpus queued-resources create "$NAME" "${GCLOUD_FLAGS[@]}" --node-id="$NAME" \
    --accelerator-type="$TYPE" --runtime-version="$VERSION" "${SPOT[@]+"${SPOT[@]}"}"
  echo "Queued. Watch it with: gcloud compute tpus queued-resources describe $NAME --zone=$ZONE"
else
  gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_FLAGS[@]}" \
    --accelerator-type="$TYPE" --version="$VERSION" "${SPOT[@]+"${SPOT[@]}"}"
fi
