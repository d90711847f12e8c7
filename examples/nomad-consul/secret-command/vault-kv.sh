#!/bin/sh
# The operator's secret command for examples/nomad-consul: plumb runs it as
# `vault-kv.sh NAME` (no shell, no other argument) and reads the value from its stdout.
#
# It serves the names of secrets/external.txt from Vault's KV v2 engine, where the Nomad seed
# kept them (mount `hashiatho.me-v2`, secret `data_plane`), and refuses every other name: the
# repo chooses names, this program (on the controller, out of the repo's reach) chooses what
# each may read. It needs `vault` with VAULT_ADDR and a token (VAULT_TOKEN or ~/.vault-token)
# whose policy reads only that secret.
#
# Demo mode, for the tests and the lab (Vault is not installed here): with PLUMB_DEMO_SECRETS
# set to a folder, the field is read from the file of that name in it instead.
set -eu
[ "$#" -eq 1 ] || { echo "usage: $0 NAME" >&2; exit 2; }
case "$1" in
  consul_token) field=patroni_consul_token ;;
  postgres_root_password) field=postgres_root_password ;;
  postgres_replication_password) field=postgres_replication_password ;;
  postgres_rewind_password) field=postgres_rewind_password ;;
  patroni_restapi_password) field=patroni_restapi_password ;;
  *) echo "$0: no secret called $1 here" >&2; exit 2 ;;
esac
if [ -n "${PLUMB_DEMO_SECRETS:-}" ]; then
  exec cat -- "$PLUMB_DEMO_SECRETS/$field"
fi
exec vault kv get -mount="${VAULT_KV_MOUNT:-hashiatho.me-v2}" -field="$field" data_plane
