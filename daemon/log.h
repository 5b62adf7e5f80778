/* log.h: one line per event, key=value fields, journald level prefixes when stderr is the journal. */
#ifndef SA_LOG_H
#define SA_LOG_H

#include <stddef.h>
#include <stdint.h>

enum sa_log_level { SA_LOG_ERR = 3, SA_LOG_WARNING = 4, SA_LOG_INFO = 6, SA_LOG_DEBUG = 7 };

void sa_log_init(void);
void sa_log_set_level(enum sa_log_level lvl);
int sa_log_level_parse(const char *name);
void sa_log(enum sa_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether lines of lvl are written now. */
int sa_log_enabled(enum sa_log_level lvl);

/* At most per_second lines per second from each call site (0: no limit; the
 * default until the daemon serves, so start-up lines are never dropped).
 * Lines past the budget are counted and summarised as one
 * event=log_suppressed line when the site's window ends. Debug lines are
 * never limited. */
void sa_log_limit(unsigned per_second);
/* Write the summaries of windows that have ended (periodic; at_stop: all). */
void sa_log_flush(int at_stop);
uint64_t sa_log_suppressed_total(void);

/* A value from the network made safe inside key="...": quotes, backslashes
 * and control bytes become '?', so it cannot fake fields or lines. */
const char *sa_log_quote(const char *s, char *buf, size_t len);
#define LOGQ(s) sa_log_quote((s), (char[192]){ 0 }, 192)

/* A line of the audit trail (what an API client or the operator changed):
 * never held to the per-site budget, which is for what any peer can make
 * the daemon say; such clients are authenticated and rate-limited already. */
void sa_log_audit(enum sa_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) sa_log(SA_LOG_ERR, __VA_ARGS__)
#define log_audit(...) sa_log_audit(SA_LOG_INFO, __VA_ARGS__)
#define log_warn(...) sa_log(SA_LOG_WARNING, __VA_ARGS__)
#define log_info(...) sa_log(SA_LOG_INFO, __VA_ARGS__)
/* The call path has debug lines per call: without debug on, their
 * arguments (LOGQ copies) are not even worked out. */
#define log_debug(...) ((void)(sa_log_enabled(SA_LOG_DEBUG) && (sa_log(SA_LOG_DEBUG, __VA_ARGS__), 1)))

#endif
