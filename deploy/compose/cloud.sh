#!/bin/sh
# A cloud trunk: SIPp answering every call (100, 180, 200), then the ACK and the carrier's BYE.
set -eu
exec sipp -sf /deploy/compose/cloud_uas.xml -i "$IP" -p 5060 -nostdin \
  -trace_stat -stf /tmp/cloud.csv -fd 5 -trace_err -error_file /tmp/cloud-errors.log
