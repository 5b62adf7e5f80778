/* log.c: stderr logging; the only process-wide state is the level and the output format. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static enum sa_log_level log_level = SA_LOG_INFO;
static int log_journal;   /* stderr is connected to journald: use <N> prefixes, no timestamp */

void sa_log_init(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	struct stat st;
	unsigned long long dev, ino;
	if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0)
		log_journal = (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void sa_log_set_level(enum sa_log_level lvl)
{
	log_level = lvl;
}

int sa_log_level_parse(const char *name)
{
	static const struct { const char *n; enum sa_log_level l; } levels[] = {
		{ "error", SA_LOG_ERR }, { "warning", SA_LOG_WARNING },
		{ "info", SA_LOG_INFO }, { "debug", SA_LOG_DEBUG },
	};
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(name, levels[i].n) == 0)
			return (int)levels[i].l;
	return -1;
}

static const char *level_name(enum sa_log_level lvl)
{
	switch (lvl) {
	case SA_LOG_ERR: return "error";
	case SA_LOG_WARNING: return "warning";
	case SA_LOG_INFO: return "info";
	default: return "debug";
	}
}

const char *sa_log_quote(const char *s, char *buf, size_t len)
{
	size_t i = 0;
	for (; s && s[i] && i + 1 < len; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[i] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
	}
	buf[i] = '\0';
	return buf;
}

void sa_log(enum sa_log_level lvl, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (lvl > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_journal) {
		fprintf(stderr, "<%d>level=%s %s\n", (int)lvl, level_name(lvl), line);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char when[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ level=%s %s\n", when, ts.tv_nsec / 1000000, level_name(lvl), line);
}
