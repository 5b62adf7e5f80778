/* notify.h: the systemd service protocol (sd_notify): readiness, reload, stop, status and the watchdog. */
#ifndef SA_NOTIFY_H
#define SA_NOTIFY_H

#include <event2/event.h>

/* Each call is a no-op when NOTIFY_SOCKET is unset (not started by systemd,
 * or Type= is not notify) or when sipauthd was built without libsystemd. */
void sa_notify_ready(void);       /* every listener is bound and the store is open */
void sa_notify_reloading(void);   /* SIGHUP received; sa_notify_ready() ends the reload */
void sa_notify_stopping(void);    /* shutdown has begun */
void sa_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* When the manager asked for a watchdog (WATCHDOG_USEC, and WATCHDOG_PID is
 * this process), send WATCHDOG=1 from the loop every half period, so a wedged
 * loop gets the service restarted. 0 (also when no watchdog is wanted) or -1. */
int sa_notify_watchdog_start(struct event_base *base);

#endif
