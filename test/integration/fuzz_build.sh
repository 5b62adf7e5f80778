#!/bin/sh
# fuzz_build.sh: `make fuzz` (test/fuzz/README.md) builds every libFuzzer harness with clang, and
# each, with the fuzzer's, AddressSanitizer's and UBSan's instrumentation, runs its whole seed
# corpus (test/fuzz/corpus/<name>) without a finding. So the harnesses keep building as lib/
# grows: a module they reach that the fuzz build did not compile once broke `make fuzz` unseen
# (make check runs the same corpora through the normal compiler, test/fuzz/run_*). Fuzzing
# proper is not run here: its time and its findings are not CI's (the hours run so far are in
# the issue notes).
. "$top_srcdir/test/lib.sh"
need clang
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' >"$T/probe.c"
clang -fsanitize=fuzzer "$T/probe.c" -o "$T/probe" >/dev/null 2>&1 ||
	skip "clang has no libFuzzer runtime (Debian: libclang-rt-14-dev)"
unset MAKEFLAGS MFLAGS MAKELEVEL   # a make of its own, not a job of make check's
make -C "$top_builddir" fuzz >"$T/build.log" 2>&1
rc=$?
assert_eq "make fuzz builds every harness" 0 "$rc"
[ "$rc" = 0 ] || tail -n 20 "$T/build.log"
for src in "$top_srcdir"/test/fuzz/fuzz_*.c; do   # every harness there is, so none is left out of FUZZ_HARNESSES
	h=$(basename "$src" .c); h=${h#fuzz_}
	n=$(ls "$top_srcdir/test/fuzz/corpus/$h" | wc -l)
	TMPDIR=$T "$top_builddir/test/fuzz/fuzz_$h" -runs=0 "$top_srcdir/test/fuzz/corpus/$h" >"$T/$h.log" 2>&1
	rc=$?
	assert_eq "fuzz_$h runs its $n seeds to the end (exit status 0, no crash, leak or UBSan report)" \
		"0 1" "$rc $(grep -c '^#[0-9]*[[:space:]]*INITED' "$T/$h.log")"
	[ "$rc" = 0 ] || tail -n 30 "$T/$h.log"
done
finish
