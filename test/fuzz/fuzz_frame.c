/* fuzz_frame.c: libFuzzer harness: TCP framing of a byte stream, each frame parsed as the daemon does. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sipmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	if (!ready) {
		sa_sipmsg_init();
		ready = 1;
	}
	if (size > 4 * SA_SIP_MAX_MSG)
		return 0;
	char *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	/* the daemon's read loop: frame, hand the frame on, drop it, again */
	size_t off = 0;
	while (off < size) {
		size_t skip = (size_t)-1;
		long n = sa_sip_frame(buf + off, size - off, &skip);
		if (skip > size - off || (n > 0 && (size_t)n > size - off - skip) || n > SA_SIP_MAX_MSG)
			abort();
		if (n <= 0)
			break;
		/* a framed message in a buffer of its own, as the daemon copies it */
		char *msg = malloc((size_t)n);
		if (!msg)
			break;
		memcpy(msg, buf + off + skip, (size_t)n);
		struct sa_msg m;
		struct sa_msg_error err = { 0 };
		sa_msg_parse(&m, msg, (size_t)n, true, &err);
		sa_msg_free(&m);
		free(msg);
		off += skip + (size_t)n;
	}
	free(buf);
	return 0;
}
