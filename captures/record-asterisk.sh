#!/usr/bin/env bash
# Records the Asterisk captures kept in this folder (captures/README.md):
#   record-asterisk.sh asterisk|switch CASE OUT.pcap
# Machine A is always a real Asterisk 20 on 127.0.2.1; machine B on 127.0.2.2
# is a second Asterisk ("asterisk") or the switch ("switch", built with
# `cargo build --release -p switch`). Both run CASE's configuration
# (CASE/A and CASE/B: iax.conf and extensions.conf, unchanged). The exchange:
# both register to each other, A calls B's 9196 (Echo) playing a 440 Hz tone
# for 4 s, then B calls A's 9196 the same way.
# Needs root, tshark, and the Asterisk peer folder (start.sh/cli.sh) in
# $ASTERISK_PEER (default: peers/asterisk in the shared folder beside the
# repository).
set -euo pipefail
kind=$1 case=$(cd "$(dirname "$0")/$2" && pwd) out=$3
repo=$(cd "$(dirname "$0")/.." && pwd)
peer=${ASTERISK_PEER:-$repo/../shared/peers/asterisk}
work=$(mktemp -d)
export ASTERISK_TREE=${ASTERISK_TREE:-$work/tree}
trap 'pkill -P $$ || true; "$peer/cli.sh" "$work/A" core stop now >/dev/null 2>&1 || true; "$peer/cli.sh" "$work/B" core stop now >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

tshark -i lo -f "udp port 4569 and (host 127.0.2.1 or host 127.0.2.2)" -w "$work/raw.pcapng" -q >/dev/null 2>&1 &
capture=$!
sleep 2
"$peer/start.sh" "$work/A" "$case/A" >/dev/null
case $kind in
asterisk)
    "$peer/start.sh" "$work/B" "$case/B" >/dev/null
    b_call() { "$peer/cli.sh" "$work/B" channel originate IAX2/A/9196 extension 100@gen >/dev/null; }
    ;;
switch)
    mkdir -p "$work/swB"
    cp "$case/B"/* "$work/swB/"
    printf '[control]\nlisten = "127.0.2.2:5039"\n' >"$work/swB/switch.toml"
    "$repo/target/release/switch" run --config "$work/swB" >"$work/switch.log" 2>&1 &
    b_call() { "$repo/target/release/switch" ctl --control 127.0.2.2:5039 originate IAX2/A/9196 app='tone(440)' hold=4 >/dev/null; }
    ;;
*) echo "usage: $0 asterisk|switch CASE OUT.pcap" >&2; exit 2 ;;
esac
# both registrations: A's, as Asterisk shows it, and B's, as A sees its peer
for _ in $(seq 100); do
    "$peer/cli.sh" "$work/A" iax2 show registry | grep -q Registered &&
        "$peer/cli.sh" "$work/A" iax2 show peers | grep -q "OK (" && break
    sleep 0.1
done
sleep 1
"$peer/cli.sh" "$work/A" channel originate IAX2/B/9196 extension 100@gen >/dev/null
sleep 6
b_call
sleep 6
"$peer/cli.sh" "$work/A" core stop now >/dev/null
sleep 1
kill -INT $capture; wait $capture || true
tshark -r "$work/raw.pcapng" -F pcap -w "$out"
echo "$out: $(tshark -r "$out" | wc -l) packets"
