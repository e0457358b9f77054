#!/usr/bin/env bash
# Installs this checkout of jaxdisco (and JAX for TPU) on every worker of the pod slice.
#
#   launch/setup_tpu.sh --name w2v2 --zone us-east5-a
#
# Flags: --name, --zone, --project (see _common.sh);
#   --src DIR     the checkout to install (default: this repository)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$(dirname "$0")/_common.sh"
SRC="$ROOT"
parse_common "$@"
set -- "${EXTRA[@]+"${EXTRA[@]}"}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --src) SRC="$2"; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
TARBALL="$(mktemp -d)/jaxdisco.tar.gz"
tar -C "$SRC" --exclude=.git --exclude='*.egg-info' --exclude=.jax_test_cache -czf "$TARBALL" .
gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME":~/jaxdisco.tar.gz "${GCLOUD_FLAGS[@]}" --worker=all
on_all_workers "set -e; rm -rf ~/jaxdisco && mkdir ~/jaxdisco && tar -C ~/jaxdisco -xzf ~/jaxdisco.tar.gz \
  && python3 -m venv ~/venv && ~/venv/bin/pip install -q -U pip \
  && ~/venv/bin/pip install -q 'jax[tpu]' && ~/venv/bin/pip install -q -e ~/jaxdisco \
  && ~/venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count())'"
