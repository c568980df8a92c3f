#!/usr/bin/env bash
# Bounded loopback load on megaqwen serve: 300 requests, 32 concurrent clients, small queue; every
# reply is a 200 completion or a 503 with Retry-After, the server survives, RSS does not grow.
# usage: load.sh URL SERVER_PID   (the server must have been started with a small --queue)
set -u
U=${1:?usage: load.sh URL SERVER_PID}; SPID=${2:?usage: load.sh URL SERVER_PID}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0; passes=0
ok() { passes=$((passes+1)); }
bad() { fails=$((fails+1)); echo "FAIL: $*"; }
rss() { awk '/^VmRSS:/{print $2}' "/proc/$SPID/status"; }  # kB
batch() { # batch FIRST LAST: requests FIRST..LAST, 32 at a time; headers/body/code per request
  seq "$1" "$2" | xargs -P 32 -I{} sh -c 'curl -s -m 30 -o "$0/b{}" -D "$0/h{}" -w "%{http_code}" "$1/v1/completions" -H "Content-Type: application/json" -d "{\"prompt\":\"Hello number {}\",\"max_tokens\":4,\"temperature\":0}" >"$0/c{}"' "$T" "$U"
}
batch 1 100; r1=$(rss)
batch 101 200
batch 201 300; r3=$(rss)
n200=0; n503=0; nbad=0
for i in $(seq 300); do
  c=$(cat "$T/c$i" 2>/dev/null)
  if [ "$c" = 200 ] && python3 -c "import json,sys;d=json.load(open(sys.argv[1]));c=d['choices'][0];assert d['object']=='text_completion' and isinstance(c['text'],str) and c['finish_reason'] in ('stop','length') and d['usage']['completion_tokens']<=4" "$T/b$i" 2>/dev/null; then
    n200=$((n200+1))
  elif [ "$c" = 503 ] && grep -qi '^Retry-After: [0-9]' "$T/h$i"; then
    n503=$((n503+1))
  else
    nbad=$((nbad+1)); [ "$nbad" -le 3 ] && echo "bad reply $i: HTTP '$c' $(head -c 200 "$T/b$i" 2>/dev/null)"
  fi
done
echo "load: 300 requests, $n200 ok, $n503 busy (503), $nbad bad; VmRSS ${r1} kB after 100, ${r3} kB after 300"
if [ "$nbad" = 0 ] && [ $((n200+n503)) = 300 ]; then ok; else bad "load: $nbad replies neither 200-completion nor 503+Retry-After"; fi
if [ "$n200" -ge 1 ]; then ok; else bad "load: no request succeeded"; fi
if kill -0 "$SPID" 2>/dev/null && [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$U/health")" = 200 ]; then ok; else bad "load: server down after load"; fi
if [ -n "$r1" ] && [ -n "$r3" ] && [ "$r3" -le $((r1 + r1 / 10 + 4096)) ]; then ok; else bad "load: RSS grew ${r1} -> ${r3} kB"; fi
echo "load: $passes passed, $fails failed"
[ "$fails" = 0 ]
