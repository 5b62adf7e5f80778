# scripts/bench/common.sh: sourced by the shell benchmarks (failover.sh, revoke.sh) after their
# options: bench_workdir NAME makes $W and $TOP, kills every pid the script added to PIDS at
# exit and removes $W unless KEEP=1; port ADDR prints a port free for UDP and TCP on ADDR.

bench_workdir() {
	TOP=$PWD
	W=$(mktemp -d "/tmp/sipauthd-bench-$1.XXXXXX")
	PIDS=()
	trap bench_cleanup EXIT
}

bench_cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}

port() { python3 -c "import random,socket
for _ in range(200):
    p=random.randint(20000,60000)
    try:
        for k in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s=socket.socket(socket.AF_INET,k); s.bind(('$1',p)); s.close()
    except OSError: continue
    print(p); break"; }
