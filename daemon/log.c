/* log.c: stderr logging; the only process-wide state is the level, the output format and the line budget. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "loglimit.h"

static enum sa_log_level log_level = SA_LOG_INFO;
static int log_journal;   /* stderr is connected to journald: use <N> prefixes, no timestamp */
/* Lines a remote peer can trigger (a refused handshake, a bad datagram) must
 * not become a disk-filling flood: each call site (its format string) gets a
 * budget per second once the daemon serves. Start-up is never limited. */
static struct sa_loglimit log_limiter;
static pthread_mutex_t log_limiter_lock = PTHREAD_MUTEX_INITIALIZER;   /* SIP workers and store threads log */

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

/* The length of the well-formed UTF-8 sequence at s (RFC 3629: no overlong
 * forms, no surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s)
{
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (s[0] >= 0xe0 && s[0] <= 0xef) {
		unsigned char lo = s[0] == 0xe0 ? 0xa0 : 0x80, hi = s[0] == 0xed ? 0x9f : 0xbf;
		return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		unsigned char lo = s[0] == 0xf0 ? 0x90 : 0x80, hi = s[0] == 0xf4 ? 0x8f : 0xbf;
		return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
	}
	return 0;
}

/* A value from the network, fit for a quoted log field: controls, quotes and
 * backslashes become '?', and so does every byte that is not part of
 * well-formed UTF-8 (journald keeps a line that is not UTF-8 as a blob, which
 * journalctl does not show); a character is never cut at the end. */
const char *sa_log_quote(const char *s, char *buf, size_t len)
{
	size_t i = 0, o = 0;
	while (s && s[i] && o + 1 < len) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x80) {
			size_t n = utf8_len((const unsigned char *)s + i);   /* stops at the NUL: no read past it */
			if (n == 0) {
				buf[o++] = '?';
				i++;
				continue;
			}
			if (o + n + 1 > len)
				break;
			memcpy(buf + o, s + i, n);
			o += n;
			i += n;
			continue;
		}
		buf[o++] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
		i++;
	}
	buf[o] = '\0';
	return buf;
}

static void log_write(enum sa_log_level lvl, const char *line)
{
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

static uint64_t log_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The summary names the site by its format, made safe for key="...". */
static void log_suppressed_cb(const void *site, uint32_t count, void *arg)
{
	char line[256], fmt[120];
	(void)arg;
	snprintf(line, sizeof(line), "event=log_suppressed count=%u window_ms=%u site=\"%s\"", (unsigned)count,
	         SA_LOGLIMIT_WINDOW_MS, site ? sa_log_quote(site, fmt, sizeof(fmt)) : "(several)");
	log_write(SA_LOG_WARNING, line);
}

void sa_log_limit(unsigned per_second)
{
	log_limiter.per_second = per_second;
}

void sa_log_flush(int at_stop)
{
	pthread_mutex_lock(&log_limiter_lock);
	sa_loglimit_expired(&log_limiter, log_now_ms(), at_stop != 0, log_suppressed_cb, NULL);
	pthread_mutex_unlock(&log_limiter_lock);
}

uint64_t sa_log_suppressed_total(void)
{
	return log_limiter.suppressed_total;
}

int sa_log_enabled(enum sa_log_level lvl)
{
	return lvl <= log_level;
}

void sa_log(enum sa_log_level lvl, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	uint32_t report;

	if (lvl > log_level)
		return;
	/* debug is asked for by the operator, to see everything */
	if (lvl != SA_LOG_DEBUG) {
		pthread_mutex_lock(&log_limiter_lock);
		bool allow = sa_loglimit_allow(&log_limiter, fmt, log_now_ms(), &report);
		pthread_mutex_unlock(&log_limiter_lock);
		if (!allow)
			return;
	}
	if (lvl != SA_LOG_DEBUG && report > 0)
		log_suppressed_cb(fmt, report, NULL);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_write(lvl, line);
}

void sa_log_audit(enum sa_log_level lvl, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	if (lvl > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_write(lvl, line);
}
