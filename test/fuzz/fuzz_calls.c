/* fuzz_calls.c: libFuzzer harness: the lines of calls.journal.N and calls.state read back (lib/calls.c).
 *
 * Each input is a journal: its lines applied in order to one call table
 * (sa_calls_journal_apply), as a start after a crash replays them. A line the
 * table refuses changes nothing. A call a line added must write back
 * (sa_call_line_put, within sa_call_line_room) to a line that reads back to
 * a call writing the very same line, and that is never a header; its end line
 * (written the same way) removes it again, one call fewer. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calls.h"
#include "sipmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "fuzz_calls: %s:%d: %s\n", __FILE__, __LINE__, #cond); abort(); } } while (0)

/* c's call line (ends) or, ends NULL, its end line: malloc'd, NUL-terminated. */
static char *write_line(const struct sa_call *c, const struct sa_call_flow_text *ends)
{
	size_t room = ends ? sa_call_line_room(c, ends) : sa_call_end_line_room(c);
	char *w = malloc(room + 1);
	CHECK(w != NULL);
	struct sa_buf b = { .p = w, .cap = room };
	CHECK(ends ? sa_call_line_put(c, ends, &b) : sa_call_end_line_put(c, &b));
	CHECK(b.len <= room);
	CHECK(memchr(w, '\n', b.len) == NULL);   /* one line */
	w[b.len] = '\0';
	return w;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sa_calls *t = sa_calls_new();
	char *text = malloc(size + 1);
	CHECK(t != NULL && text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	unsigned n = 0;
	for (char *line = text, *next; line != NULL; line = next, n++) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		struct sa_call *c;
		struct sa_call_flow_text ends[2];
		unsigned before = sa_calls_count(t);
		if (sa_calls_journal_apply(t, line, &c, ends) < 0) {
			CHECK(sa_calls_count(t) == before);
			continue;
		}
		if (c == NULL)   /* an end line: its call gone, if the table had it */
			continue;
		unsigned after = sa_calls_count(t);
		CHECK(after == before || after == before + 1);   /* the same dialog again replaces it */
		char *w = write_line(c, ends);
		CHECK(!sa_calls_journal_header_ok(w) && !sa_calls_header_ok(w));
		struct sa_call_flow_text back[2];
		struct sa_call *r = sa_call_from_line(w, back);
		CHECK(r != NULL);
		char *w2 = write_line(r, back);
		CHECK(strcmp(w, w2) == 0);
		CHECK(sa_calls_find_dialog(t, r->d.call_id, r->d.caller_tag, r->d.callee_tag) == c);
		sa_call_free(r);
		free(w2);
		free(w);
		if (n % 2 == 0) {   /* every other call ends again, so that tables also grow */
			char *e = write_line(c, NULL);
			struct sa_call *none;
			CHECK(sa_calls_journal_apply(t, e, &none, ends) == 0 && none == NULL);
			CHECK(sa_calls_count(t) == after - 1);
			free(e);
		}
	}
	free(text);
	sa_calls_free(t);
	return 0;
}
