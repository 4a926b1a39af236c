#!/bin/sh
# A cloud trunk: SIPp answering every call (100, 180, 200), then the ACK and the carrier's BYE.
set -eu
# The anycast address is reached through the router (its ECMP route over both nodes).
ip route add 198.18.0.100/32 via 198.18.3.1
exec sipp -sf /deploy/compose/cloud_uas.xml -i "$IP" -p 5060 -nostdin \
  -trace_stat -stf /tmp/cloud.csv -fd 5 -trace_err -error_file /tmp/cloud-errors.log
