#!/bin/sh
# The carrier: SIPp placing RATE calls a second to the anycast address through the router, one
# socket (source port) per call (-t un) so the router's ECMP hash spreads them over both nodes.
set -eu
ip route add 198.18.0.100/32 via 198.18.2.1
# Give BGP time to come up and a node to become ready.
sleep "${DELAY:-8}"
exec sipp -sf /deploy/compose/carrier_uac.xml 198.18.0.100:5060 -i 198.18.2.10 -t un \
  -r "${RATE:-10}" -l 1000 -max_socket 2000 -recv_timeout 10000 -nostdin \
  -trace_stat -stf /tmp/carrier.csv -fd 5 -trace_err -error_file /tmp/carrier-errors.log \
  -trace_screen -screen_file /tmp/carrier-screen.log
