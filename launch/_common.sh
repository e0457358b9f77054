# Shared flag parsing for the TPU pod scripts (sourced, not run).
# Every script takes: --name NAME --zone ZONE [--project PROJECT]; the rest are script-specific.
set -euo pipefail

NAME="${JAXDISCO_TPU_NAME:-}"
ZONE="${JAXDISCO_TPU_ZONE:-}"
PROJECT="${JAXDISCO_TPU_PROJECT:-}"
EXTRA=()

parse_common() {
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --name) NAME="$2"; shift 2 ;;
      --zone) ZONE="$2"; shift 2 ;;
      --project) PROJECT="$2"; shift 2 ;;
      *) EXTRA+=("$1"); shift ;;
    esac
  done
  if [[ -z "$NAME" || -z "$ZONE" ]]; then
    echo "error: --name and --zone are required (or JAXDISCO_TPU_NAME / JAXDISCO_TPU_ZONE)" >&2
    exit 2
  fi
  GCLOUD_FLAGS=(--zone="$ZONE")
  if [[ -n "$PROJECT" ]]; then GCLOUD_FLAGS+=(--project="$PROJECT"); fi
}

# Runs a shell command on every worker of the pod slice.
on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker=all --command="$1"
}
