#!/bin/sh
# A node of the pair, in one container: the anycast /32 on lo, BIRD (node.conf: the anycast
# route disabled until told), `pointsman announce` between BIRD and the proxy's /ready, then the
# proxy itself as the container's main process (docker stop sends it SIGTERM: it drains, /ready
# turns false, the sidecar withdraws the route). NODE is a or b.
set -eu
ip addr add 198.18.0.100/32 dev lo
# Answers to the carrier and to the clouds go back through the router.
ip route add 198.18.2.0/24 via 198.18.1.1
ip route add 198.18.3.0/24 via 198.18.1.1
bird -f -c /deploy/bird/node.conf -s /run/bird.ctl &
pointsman announce --admin 127.0.0.1:9060 --bird-socket /run/bird.ctl &
exec pointsman run --config "/deploy/compose/node-$NODE.toml"
