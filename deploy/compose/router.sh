#!/bin/sh
# The upstream router: BIRD learns the anycast /32 from both nodes and installs one ECMP route
# (router.conf: merge paths on). Forwarding and the L4 hash are the compose file's sysctls.
set -eu
exec bird -f -c /deploy/bird/router.conf -s /run/bird.ctl
