/* notify.c: sd_notify(3) messages to the service manager, and the watchdog timer on the loop. */
#include "notify.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "config.h"
#include "log.h"

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

static void notify(const char *msg)
{
	/* Failing to reach the manager is not worth stopping a proxy for: log it and go on. */
	int rc = sd_notify(0, msg);
	if (rc < 0)
		log_warn("event=sd_notify_failed message=\"%s\" error=%d", msg, -rc);
}

/* A self-rearming one-shot on the loop: event_base_once events belong to the
 * base and are freed with it, so the watchdog needs no state of its own. */
static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	struct event_base *base = arg;
	uint64_t usec = 0;
	notify("WATCHDOG=1");
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return;
	struct timeval half = { .tv_sec = (time_t)(usec / 2 / 1000000), .tv_usec = (suseconds_t)(usec / 2 % 1000000) };
	if (event_base_once(base, -1, EV_TIMEOUT, watchdog_cb, base, &half) < 0)
		log_err("event=watchdog_failed error=\"cannot schedule the next keep-alive\"");
}

int sa_notify_watchdog_start(struct event_base *base)
{
	uint64_t usec = 0;
	int on = sd_watchdog_enabled(0, &usec);
	if (on < 0)
		log_warn("event=watchdog_ignored error=\"bad WATCHDOG_USEC or WATCHDOG_PID\"");
	if (on <= 0 || usec == 0)
		return 0;
	log_info("event=watchdog_armed interval_ms=%llu", (unsigned long long)(usec / 2 / 1000));
	struct timeval now = { 0, 0 };
	return event_base_once(base, -1, EV_TIMEOUT, watchdog_cb, base, &now) < 0 ? -1 : 0;
}

void sa_notify_status(const char *fmt, ...)
{
	char msg[512];
	int n = snprintf(msg, sizeof(msg), "STATUS=");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
	va_end(ap);
	notify(msg);
}

void sa_notify_reloading(void)
{
	/* MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match the reload; older managers ignore it. */
	struct timespec ts;
	char msg[96];
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
	         (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull);
	notify(msg);
}

void sa_notify_ready(void)
{
	notify("READY=1\nSTATUS=serving");
}

void sa_notify_stopping(void)
{
	notify("STOPPING=1\nSTATUS=stopping");
}

#else /* built without libsystemd: nothing to tell */

int sa_notify_watchdog_start(struct event_base *base)
{
	return 0;
}

void sa_notify_status(const char *fmt, ...)
{
}

void sa_notify_reloading(void)
{
}

void sa_notify_ready(void)
{
}

void sa_notify_stopping(void)
{
}

#endif
