#!/bin/bash
# Exit 0 when the lab's API server answers and its node is Ready.
. "$(dirname "$(readlink -f "$0")")/env.sh"
[ -e /run/netns/$NETNS ] && [ -f "$KC/super-admin.conf" ] || exit 1
nsenter --net=/run/netns/$NETNS "$B/kubectl" --kubeconfig "$KC/super-admin.conf" --request-timeout=5s \
  get node lab -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
