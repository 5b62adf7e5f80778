/* run_corpus.c: regression driver: runs a fuzz harness over every file of its seed corpus. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		return -1;
	}
	size_t cap = 1 << 16, len = 0;
	uint8_t *buf = malloc(cap);
	size_t n;
	while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			uint8_t *more = realloc(buf, cap *= 2);
			if (!more)
				free(buf);
			buf = more;
		}
	}
	fclose(f);
	/* an exact-size copy so that the sanitizers see reads past the end */
	uint8_t *in = buf ? malloc(len ? len : 1) : NULL;
	if (!in) {
		free(buf);
		return -1;
	}
	memcpy(in, buf, len);
	free(buf);
	LLVMFuzzerTestOneInput(in, len);
	free(in);
	return 0;
}

static int run_path(const char *path, unsigned *count)
{
	struct stat sb;
	if (stat(path, &sb) != 0) {
		perror(path);
		return -1;
	}
	if (!S_ISDIR(sb.st_mode)) {
		(*count)++;
		return run_file(path);
	}
	struct dirent **ents;
	int n = scandir(path, &ents, NULL, alphasort), rc = n < 0 ? -1 : 0;
	for (int i = 0; i < n; i++) {
		if (ents[i]->d_name[0] != '.') {
			char p[4096];
			snprintf(p, sizeof(p), "%s/%s", path, ents[i]->d_name);
			if (run_path(p, count) < 0)
				rc = -1;
		}
		free(ents[i]);
	}
	free(ents);
	return rc;
}

/* With no arguments: $top_srcdir/test/fuzz/corpus/FUZZ_CORPUS (make check). */
int main(int argc, char **argv)
{
	unsigned count = 0;
	int rc = 0;
	if (argc > 1) {
		for (int i = 1; i < argc; i++)
			rc |= run_path(argv[i], &count);
	} else {
#ifdef FUZZ_CORPUS
		char dir[4096];
		const char *top = getenv("top_srcdir");
		snprintf(dir, sizeof(dir), "%s/test/fuzz/corpus/%s", top ? top : ".", FUZZ_CORPUS);
		rc = run_path(dir, &count);
#else
		fprintf(stderr, "usage: %s FILE-OR-DIR...\n", argv[0]);
		return 2;
#endif
	}
	printf("%u input(s) run\n", count);
	if (count == 0)
		return 1;
	return rc ? 1 : 0;
}
