#!/usr/bin/env bash
# Stages the root filesystems of two images, no registry needed:
#   - deploy/docker/node/rootfs/ for pointsman:local (node/Dockerfile), the image a DMZ host or an
#     orchestrator runs: pointsman, statically linked (glibc, crt-static), built here in release
#     mode, run as nobody; nothing else;
#   - deploy/docker/rootfs/ for pointsman-lab:local (Dockerfile beside this file), the compose
#     pair's image: pointsman:local plus BIRD 2 (bird, birdc), iproute2 (ip), SIPp, dash
#     (/bin/sh), sleep, cat and tail, copied from this machine with every shared library `ldd`
#     lists and the ELF interpreter.
# Then `docker build -t pointsman:local deploy/docker/node` and `docker-compose build`. Needs: a
# Debian machine with bird2, iproute2 and sip-tester installed, and the Rust toolchain.
#
#   deploy/docker/build.sh                 static release build, then stage
#   deploy/docker/build.sh --no-build      stage the binary built last time
#   deploy/docker/build.sh --binary PATH   stage PATH as pointsman, with its shared libraries
#                                          (tests/compose.rs stages the test build this way)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET=x86_64-unknown-linux-gnu
BIN="$ROOT/target/$TARGET/release/pointsman"
STATIC=1

case "${1:-}" in
--no-build) ;;
--binary)
	BIN="${2:?--binary needs the path of a pointsman binary}"
	STATIC=0
	;;
*)
	# --target keeps build scripts and proc macros dynamic; only pointsman itself is static.
	(cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build --release --target "$TARGET" -p pointsman --bin pointsman)
	;;
esac
[[ -x "$BIN" ]] || { echo "no $BIN: run without --no-build" >&2; exit 1; }
if [[ $STATIC == 1 ]] && ldd "$BIN" 2>&1 | grep -q '=>'; then
	echo "$BIN is dynamically linked: build it with RUSTFLAGS=\"-C target-feature=+crt-static\"" >&2
	exit 1
fi

# The closure of a program's shared libraries, at the same paths, into $2 (default: the lab's).
copy_libs() {
	local into="${2:-$ROOTFS}"
	ldd "$1" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
		mkdir -p "$into$(dirname "$lib")"
		cp -L "$lib" "$into$lib"
	done
}

# The node image: pointsman and, for a dynamically linked one, its libraries; nobody to run as.
NODE="$HERE/node/rootfs"
rm -rf "$NODE"
mkdir -p "$NODE"/{usr/local/bin,tmp,etc/pointsman}
chmod 1777 "$NODE/tmp"
# Without its debug info (the release profile keeps line tables: 75 MB -> 13 MB).
strip --strip-debug -o "$NODE/usr/local/bin/pointsman" "$BIN"
if [[ $STATIC == 0 ]]; then
	copy_libs "$BIN" "$NODE"
	if [[ -L /lib64 ]]; then
		mkdir -p "$NODE/lib64"
		cp -L /lib64/ld-linux-x86-64.so.2 "$NODE/lib64/"
	fi
fi
printf 'root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n' >"$NODE/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$NODE/etc/group"

ROOTFS="$HERE/rootfs"
rm -rf "$ROOTFS"
mkdir -p "$ROOTFS"/{bin,usr/local/bin,tmp,run,etc,var/run}
chmod 1777 "$ROOTFS/tmp"
# A program and its shared libraries, at the same paths.
copy_with_libs() {
	local prog="$1"
	mkdir -p "$ROOTFS$(dirname "$prog")"
	cp -L "$prog" "$ROOTFS$prog"
	copy_libs "$prog"
}
for prog in /usr/sbin/bird /usr/sbin/birdc /usr/sbin/ip /usr/bin/sipp /usr/bin/dash /usr/bin/sleep \
	/usr/bin/cat /usr/bin/tail; do
	[[ -x "$prog" ]] || { echo "missing $prog (apt-get install bird2 iproute2 sip-tester)" >&2; exit 1; }
	copy_with_libs "$prog"
done
ln -sf /usr/bin/dash "$ROOTFS/bin/sh"
for tool in sleep cat tail; do ln -sf "/usr/bin/$tool" "$ROOTFS/bin/$tool"; done
# Debian's /lib64 and /lib are links into /usr: the interpreter must be found at /lib64.
if [[ -L /lib64 && ! -e "$ROOTFS/lib64/ld-linux-x86-64.so.2" ]]; then
	mkdir -p "$ROOTFS/lib64"
	cp -L /lib64/ld-linux-x86-64.so.2 "$ROOTFS/lib64/"
fi
# iproute2 reads its tables from here; SIPp's curses wants a terminal description.
cp -r /etc/iproute2 "$ROOTFS/etc/" 2>/dev/null || true
mkdir -p "$ROOTFS/usr/share/terminfo/d"
cp -L /usr/share/terminfo/d/dumb "$ROOTFS/usr/share/terminfo/d/" 2>/dev/null \
	|| cp -L /lib/terminfo/d/dumb "$ROOTFS/usr/share/terminfo/d/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/nonexistent\n' >"$ROOTFS/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOTFS/etc/group"
# The node link's certificates (deploy/compose/certs/, mounted with deploy/): a CA for the
# pair and one certificate per node for its link address (server and client: the link is
# mutual TLS). Made once; delete the folder for new ones.
CERTS="$ROOT/deploy/compose/certs"
if [[ ! -f "$CERTS/ca.pem" ]]; then
	command -v openssl >/dev/null || { echo "missing openssl (apt-get install openssl)" >&2; exit 1; }
	mkdir -p "$CERTS"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
		-subj "/CN=pointsman compose pair CA" -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" \
		-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
	for node in a:198.18.1.11 b:198.18.1.12; do
		name="${node%%:*}" ip="${node#*:}"
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=node-$name" \
			-keyout "$CERTS/node-$name.key" -out "$CERTS/node-$name.csr" 2>/dev/null
		openssl x509 -req -in "$CERTS/node-$name.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
			-CAcreateserial -days 3650 -out "$CERTS/node-$name.pem" -extfile <(printf '%s\n' \
			"subjectAltName=IP:$ip" "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
			"extendedKeyUsage=serverAuth,clientAuth") 2>/dev/null
		rm -f "$CERTS/node-$name.csr"
	done
	chmod 644 "$CERTS"/*
	echo "made the node link's certificates in $CERTS"
fi
echo "staged $(du -sh "$NODE" | cut -f1) in $NODE and $(du -sh "$ROOTFS" | cut -f1) in $ROOTFS:"
echo "now docker build -t pointsman:local $HERE/node && docker-compose build"
