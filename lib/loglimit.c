/* loglimit.c: per-site log line budget in fixed windows, O(1) and allocation-free per line. */
#include "loglimit.h"

#include <string.h>

#define PROBES 8

void sa_loglimit_init(struct sa_loglimit *ll, unsigned per_second)
{
	memset(ll, 0, sizeof(*ll));
	ll->per_second = per_second;
}

/* Sites are string literals: their addresses are spread enough that a
 * multiplicative hash over the pointer bits places them well. */
static struct sa_loglimit_site *site_find(struct sa_loglimit *ll, const void *key)
{
	uint64_t h = ((uint64_t)(uintptr_t)key * 0x9e3779b97f4a7c15ull) >> 32;
	for (unsigned i = 0; i < PROBES; i++) {
		struct sa_loglimit_site *s = &ll->site[(h + i) % SA_LOGLIMIT_SITES];
		if (s->key == key)
			return s;
		if (s->key == NULL) {
			s->key = key;
			return s;
		}
	}
	return &ll->site[SA_LOGLIMIT_SITES];
}

bool sa_loglimit_allow(struct sa_loglimit *ll, const void *key, uint64_t now, uint32_t *report)
{
	*report = 0;
	if (ll->per_second == 0)
		return true;
	struct sa_loglimit_site *s = site_find(ll, key);
	if (now - s->window_start >= SA_LOGLIMIT_WINDOW_MS || now < s->window_start) {
		*report = s->suppressed;
		s->window_start = now;
		s->lines = 0;
		s->suppressed = 0;
	}
	if (s->lines < ll->per_second) {
		s->lines++;
		return true;
	}
	s->suppressed++;
	ll->suppressed_total++;
	return false;
}

void sa_loglimit_expired(struct sa_loglimit *ll, uint64_t now, bool at_stop,
                         void (*fn)(const void *key, uint32_t count, void *arg), void *arg)
{
	for (unsigned i = 0; i <= SA_LOGLIMIT_SITES; i++) {
		struct sa_loglimit_site *s = &ll->site[i];
		if (s->suppressed == 0 || (!at_stop && now - s->window_start < SA_LOGLIMIT_WINDOW_MS))
			continue;
		fn(s->key, s->suppressed, arg);
		/* a new window from now: the next line is written, not counted again */
		s->window_start = now;
		s->lines = 0;
		s->suppressed = 0;
	}
}
