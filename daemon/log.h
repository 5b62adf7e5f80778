/* log.h: one line per event, key=value fields, journald level prefixes when stderr is the journal. */
#ifndef SA_LOG_H
#define SA_LOG_H

enum sa_log_level { SA_LOG_ERR = 3, SA_LOG_WARNING = 4, SA_LOG_INFO = 6, SA_LOG_DEBUG = 7 };

void sa_log_init(void);
void sa_log_set_level(enum sa_log_level lvl);
int sa_log_level_parse(const char *name);
void sa_log(enum sa_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) sa_log(SA_LOG_ERR, __VA_ARGS__)
#define log_warn(...) sa_log(SA_LOG_WARNING, __VA_ARGS__)
#define log_info(...) sa_log(SA_LOG_INFO, __VA_ARGS__)
#define log_debug(...) sa_log(SA_LOG_DEBUG, __VA_ARGS__)

#endif
