/* floor.c: the least a server can spend on an authenticated REGISTER exchange on this machine.
 *
 * A UDP responder with no SIP logic: it answers a REGISTER without credentials with a 401
 * (a fixed nonce, qop="auth") and one with credentials with a 200, copying Via, From, To,
 * Call-ID and CSeq (and the Contact into the 200), checking nothing. One blocking recvmmsg
 * and one sendto per message, as Kamailio's UDP receivers and sipauthd's event loop do at
 * least. Its CPU per exchange is what the kernel charges any server for the datagrams of
 * one exchange: the floor under both servers' figures in scripts/bench/run. Run by
 * scripts/bench/floor; never part of sipauthd.
 *
 *   floor ADDRESS PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 16
#define MAX_MSG 4096

/* Append the header line named name (with its CRLF) from msg to out. */
static size_t copy_header(const char *msg, size_t len, const char *name, char *out, size_t at, size_t cap)
{
	size_t nl = strlen(name);
	for (const char *p = msg; p && p < msg + len;) {
		const char *eol = memchr(p, '\n', (size_t)(msg + len - p));
		if (!eol)
			break;
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			size_t n = (size_t)(eol - p) + 1;
			if (at + n < cap) {
				memcpy(out + at, p, n);
				at += n;
			}
			break;
		}
		p = eol + 1;
	}
	return at;
}

static size_t reply(const char *msg, size_t len, char *out, size_t cap)
{
	bool authorized = memmem(msg, len, "\nAuthorization:", 15) != NULL;
	size_t n = (size_t)snprintf(out, cap, "%s\r\n", authorized ? "SIP/2.0 200 OK" : "SIP/2.0 401 Unauthorized");
	n = copy_header(msg, len, "Via", out, n, cap);
	n = copy_header(msg, len, "From", out, n, cap);
	n = copy_header(msg, len, "To", out, n, cap);
	if (n > 2 && n + 16 < cap) {   /* a To tag before the CRLF */
		n -= 2;
		n += (size_t)snprintf(out + n, cap - n, ";tag=fl00r\r\n");
	}
	n = copy_header(msg, len, "Call-ID", out, n, cap);
	n = copy_header(msg, len, "CSeq", out, n, cap);
	if (authorized)
		n = copy_header(msg, len, "Contact", out, n, cap);
	else
		n += (size_t)snprintf(out + n, cap - n,
		                      "WWW-Authenticate: Digest realm=\"floor\", nonce=\"0123456789abcdef\", "
		                      "qop=\"auth\", algorithm=MD5\r\n");
	n += (size_t)snprintf(out + n, cap - n, "Content-Length: 0\r\n\r\n");
	return n < cap ? n : cap;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: floor ADDRESS PORT\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	int rcvbuf = 4 << 20;
	if (fd < 0 || inet_pton(AF_INET, argv[1], &sin.sin_addr) != 1 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
		perror("floor");
		return 1;
	}
	static char bufs[BATCH][MAX_MSG], out[MAX_MSG];
	struct sockaddr_in from[BATCH];
	struct iovec iov[BATCH];
	struct mmsghdr mh[BATCH];
	for (;;) {
		for (int i = 0; i < BATCH; i++) {
			iov[i] = (struct iovec){ bufs[i], MAX_MSG - 1 };
			mh[i].msg_hdr = (struct msghdr){ .msg_name = &from[i], .msg_namelen = sizeof(from[i]),
			                                 .msg_iov = &iov[i], .msg_iovlen = 1 };
		}
		int n = recvmmsg(fd, mh, BATCH, MSG_WAITFORONE, NULL);
		if (n < 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (mh[i].msg_len < 8 || memcmp(bufs[i], "REGISTER", 8) != 0)
				continue;
			size_t len = reply(bufs[i], mh[i].msg_len, out, sizeof(out));
			sendto(fd, out, len, 0, (struct sockaddr *)&from[i], mh[i].msg_hdr.msg_namelen);
		}
	}
}
