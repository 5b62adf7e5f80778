/* floor.c: the least a server can spend on the benchmark's exchanges on this machine.
 *
 * A UDP responder and relay with no SIP logic, checking nothing, sending exactly the
 * datagrams an authenticating proxy sends for scripts/bench/run's load:
 * - a REGISTER without credentials gets a 401 (a fixed nonce, qop="auth"), one with
 *   credentials a 200, copying Via, From, To, Call-ID and CSeq (and the Contact into the 200);
 * - with a gateway, an INVITE without credentials gets a 407 and its ACK is absorbed; one with
 *   credentials gets a 100 and goes to the gateway with a Via and a Record-Route on top; the
 *   other requests (ACK, BYE) go to the gateway with a Via on top; a response loses the top
 *   Via and goes to the address in the next one.
 * One blocking recvmmsg per batch and one sendto per datagram, as Kamailio's UDP receivers
 * and sipauthd's event loop do at least. Its CPU per exchange is what the kernel charges any
 * server for the datagrams of one exchange or call: the floor under both servers' figures.
 * Run by scripts/bench/run (the floor rows); never part of sipauthd.
 *
 *   floor ADDRESS PORT [GATEWAY_ADDRESS GATEWAY_PORT]
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

/* A response of our own to msg: status line, the dialog's headers, then extra lines. */
static size_t reply(const char *msg, size_t len, const char *status, bool tag, bool contact, const char *extra,
                    char *out, size_t cap)
{
	size_t n = (size_t)snprintf(out, cap, "%s\r\n", status);
	n = copy_header(msg, len, "Via", out, n, cap);
	n = copy_header(msg, len, "From", out, n, cap);
	n = copy_header(msg, len, "To", out, n, cap);
	if (tag && n > 2 && n + 16 < cap) {   /* a To tag before the CRLF */
		n -= 2;
		n += (size_t)snprintf(out + n, cap - n, ";tag=fl00r\r\n");
	}
	n = copy_header(msg, len, "Call-ID", out, n, cap);
	n = copy_header(msg, len, "CSeq", out, n, cap);
	if (contact)
		n = copy_header(msg, len, "Contact", out, n, cap);
	if (n < cap)
		n += (size_t)snprintf(out + n, cap - n, "%sContent-Length: 0\r\n\r\n", extra);
	return n < cap ? n : cap;
}

static size_t register_reply(const char *msg, size_t len, char *out, size_t cap)
{
	if (memmem(msg, len, "\nAuthorization:", 15))
		return reply(msg, len, "SIP/2.0 200 OK", true, true, "", out, cap);
	return reply(msg, len, "SIP/2.0 401 Unauthorized", true, false,
	             "WWW-Authenticate: Digest realm=\"floor\", nonce=\"0123456789abcdef\", qop=\"auth\", "
	             "algorithm=MD5\r\n", out, cap);
}

static struct sockaddr_in self, gateway;
static unsigned long branches;

/* The request with our Via (and a Record-Route for an INVITE) after its start line. */
static size_t relay_request(const char *msg, size_t len, bool record_route, char *out, size_t cap)
{
	const char *eol = memchr(msg, '\n', len);
	if (!eol)
		return 0;
	size_t first = (size_t)(eol - msg) + 1, n = first;
	char host[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &self.sin_addr, host, sizeof(host));
	memcpy(out, msg, first);
	n += (size_t)snprintf(out + n, cap - n, "Via: SIP/2.0/UDP %s:%u;branch=z9hG4bKfl00r%lu\r\n", host,
	                      ntohs(self.sin_port), ++branches);
	if (record_route)
		n += (size_t)snprintf(out + n, cap - n, "Record-Route: <sip:%s:%u;lr>\r\n", host, ntohs(self.sin_port));
	if (n + len - first > cap)
		return 0;
	memcpy(out + n, msg + first, len - first);
	return n + len - first;
}

/* The response without its top Via value; *to: the sent-by of the next one. */
static size_t relay_response(const char *msg, size_t len, struct sockaddr_in *to, char *out, size_t cap)
{
	const char *via = memmem(msg, len, "\nVia: ", 6);
	if (!via)
		return 0;
	via += 1;
	const char *eol = memchr(via, '\n', (size_t)(msg + len - via)), *comma, *next;
	if (!eol)
		return 0;
	comma = memchr(via, ',', (size_t)(eol - via));
	size_t n = (size_t)(via - msg);
	memcpy(out, msg, n);
	if (comma) {   /* "Via: ours, theirs": keep "Via: theirs" */
		n += (size_t)snprintf(out + n, cap - n, "Via:");
		next = comma + 1;
	} else {
		next = eol + 1;
	}
	if (n + (size_t)(msg + len - next) > cap)
		return 0;
	memcpy(out + n, next, (size_t)(msg + len - next));
	n += (size_t)(msg + len - next);
	/* the next Via's sent-by: "SIP/2.0/UDP host:port" */
	const char *v = comma ? comma + 1 : memmem(next, (size_t)(msg + len - next), "Via: ", 5);
	const char *sp = v && v + 1 < msg + len ? memchr(v + 1, ' ', (size_t)(msg + len - v - 1)) : NULL;
	if (!sp)
		return 0;
	while (*sp == ' ')
		sp++;
	char host[64];
	unsigned port = 5060;
	if (sscanf(sp, "%63[^:;, \r]:%u", host, &port) < 1)
		return 0;
	*to = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	return inet_pton(AF_INET, host, &to->sin_addr) == 1 ? n : 0;
}

static bool is_method(const char *msg, size_t len, const char *m)
{
	size_t n = strlen(m);
	return len > n && memcmp(msg, m, n) == 0 && msg[n] == ' ';
}

/* What goes out for one datagram of the call load: up to two sends. */
static void call_datagram(int fd, const char *msg, size_t len, const struct sockaddr_in *from, char *out, size_t cap)
{
	struct sockaddr_in to;
	size_t n;
	if (len > 8 && memcmp(msg, "SIP/2.0 ", 8) == 0) {
		if ((n = relay_response(msg, len, &to, out, cap)) > 0)
			sendto(fd, out, n, 0, (struct sockaddr *)&to, sizeof(to));
		return;
	}
	bool invite = is_method(msg, len, "INVITE");
	if (invite && !memmem(msg, len, "\nProxy-Authorization:", 21)) {
		n = reply(msg, len, "SIP/2.0 407 Proxy Authentication Required", true, false,
		          "Proxy-Authenticate: Digest realm=\"floor\", nonce=\"0123456789abcdef\", qop=\"auth\", "
		          "algorithm=MD5\r\n", out, cap);
		sendto(fd, out, n, 0, (const struct sockaddr *)from, sizeof(*from));
		return;
	}
	if (is_method(msg, len, "ACK") && memmem(msg, len, "tag=fl00r", 9))
		return;   /* the ACK of our 407 */
	if (invite) {
		n = reply(msg, len, "SIP/2.0 100 Trying", false, false, "", out, cap);
		sendto(fd, out, n, 0, (const struct sockaddr *)from, sizeof(*from));
	}
	if ((n = relay_request(msg, len, invite, out, cap)) > 0)
		sendto(fd, out, n, 0, (struct sockaddr *)&gateway, sizeof(gateway));
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 5) {
		fprintf(stderr, "usage: floor ADDRESS PORT [GATEWAY_ADDRESS GATEWAY_PORT]\n");
		return 2;
	}
	bool calls = argc == 5;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	self = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])) };
	gateway = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)(calls ? atoi(argv[4]) : 0)) };
	int rcvbuf = 4 << 20;
	if (fd < 0 || inet_pton(AF_INET, argv[1], &self.sin_addr) != 1 ||
	    (calls && inet_pton(AF_INET, argv[3], &gateway.sin_addr) != 1) ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0 ||
	    bind(fd, (struct sockaddr *)&self, sizeof(self)) != 0) {
		perror("floor");
		return 1;
	}
	static char bufs[BATCH][MAX_MSG], out[MAX_MSG + 256];
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
			bufs[i][mh[i].msg_len] = '\0';   /* for sscanf: the iovec leaves room */
			if (calls) {
				call_datagram(fd, bufs[i], mh[i].msg_len, &from[i], out, sizeof(out));
			} else if (mh[i].msg_len > 8 && memcmp(bufs[i], "REGISTER", 8) == 0) {
				size_t len = register_reply(bufs[i], mh[i].msg_len, out, sizeof(out));
				sendto(fd, out, len, 0, (struct sockaddr *)&from[i], mh[i].msg_hdr.msg_namelen);
			}
		}
	}
}
