/* transport.c: UDP sockets and TCP connections on the libevent loop; framing by Content-Length; connection limits. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "log.h"
#include "server.h"

#define CONN_BUCKETS 4096
#define ACCEPT_BACKOFF_MS 250     /* out of descriptors: the listener rests this long, then tries again */

struct sa_conn {
	uint64_t id;
	struct sa_conn *next;           /* hash chain by id */
	struct sa_conn *addr_next;      /* hash chain by transport and peer address */
	struct sa_server *srv;
	struct bufferevent *bev;
	struct sa_flow flow;
	struct sa_connsrc *src;         /* accepted: its source's counts; NULL for connections we opened */
	bool handshaking;               /* TLS: counted as a handshake in progress until done */
	/* One timer: the handshake deadline, then the idle check. Only a
	 * complete message (or an RFC 5626 CRLFCRLF ping) moves last_msg_ms,
	 * so a peer trickling bytes of a message that never ends is closed at
	 * tcp_idle_timeout like a silent one. */
	struct event *timer;
	uint64_t last_msg_ms;
	/* A request on it authenticated, or came from a trusted address, or we
	 * opened it: only then do its messages and pings move last_msg_ms. A
	 * stranger's connection is closed tcp_idle_timeout after it opened,
	 * however it pings (a few addresses holding connections open with a
	 * 4-byte ping each could fill max_connections). */
	bool proven;
	unsigned crlfs;                 /* CR and LF bytes read since the last message */
	/* The registrations on it, per credential (a hash of its id): it is
	 * not closed for idleness while one lives. reg_keep_ms is the latest
	 * of them and of reg_over_ms (credentials past SA_CONN_REG_KEEPS). */
	struct reg_keep { uint64_t cred, until_ms; } *regs;
	unsigned nregs;
	uint64_t reg_over_ms;
	uint64_t reg_keep_ms;
	uint64_t call_keep_ms;          /* a call set up over it may last until then: no idle close */
	size_t paused_out;              /* paused: output queued when last looked at (draining: alive) */
	bool connecting;                /* ours, not up yet (TLS: handshake not done) */
	bool paused;                    /* not read: SA_CONN_WQ_PAUSE of output unread by the peer */
	bool overflow;                  /* SA_CONN_WQ_MAX unread: closed by the timer, nothing more sent */
};

/* Dotted quad into out (at least INET_ADDRSTRLEN bytes): what inet_ntop
 * writes, without the sprintf it makes per octet. Several per message. */
static void ipv4_text(const struct in_addr *a, char *out)
{
	const unsigned char *b = (const unsigned char *)&a->s_addr;
	for (int i = 0; i < 4; i++) {
		unsigned v = b[i];
		if (v >= 100)
			*out++ = (char)('0' + v / 100);
		if (v >= 10)
			*out++ = (char)('0' + v / 10 % 10);
		*out++ = (char)('0' + v % 10);
		*out++ = i < 3 ? '.' : '\0';
	}
}

void sa_flow_peer(const struct sa_flow *fl, char *addr, size_t alen, uint16_t *port)
{
	if (fl->ss.sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &fl->ss.in6.sin6_addr, addr, (socklen_t)alen);
		*port = ntohs(fl->ss.in6.sin6_port);
	} else {
		if (alen >= INET_ADDRSTRLEN)
			ipv4_text(&fl->ss.in.sin_addr, addr);
		else
			inet_ntop(AF_INET, &fl->ss.in.sin_addr, addr, (socklen_t)alen);
		*port = ntohs(fl->ss.in.sin_port);
	}
}

/* A connection id names the worker that holds it in its top byte. */
#define CONN_WORKER_SHIFT 56

static unsigned conn_worker(uint64_t id)
{
	return (unsigned)(id >> CONN_WORKER_SHIFT);
}

static struct sa_conn *conn_find(struct sa_server *srv, uint64_t id)
{
	for (struct sa_conn *c = srv->conn_by_id[id % CONN_BUCKETS]; c; c = c->next)
		if (c->id == id)
			return c;
	return NULL;
}

/* The bucket of a transport and peer address (port included). */
static struct sa_conn **addr_bucket(struct sa_server *srv, const struct sa_flow *fl)
{
	const unsigned char *p;
	size_t n;
	uint16_t port;
	enum sa_proto proto = fl->proto;
	if (fl->ss.sa.sa_family == AF_INET6)
		p = (const unsigned char *)&fl->ss.in6.sin6_addr, n = 16, port = fl->ss.in6.sin6_port;
	else
		p = (const unsigned char *)&fl->ss.in.sin_addr, n = 4, port = fl->ss.in.sin_port;
	uint32_t h = (2166136261u ^ (unsigned)proto) * 16777619u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	h = ((h ^ (port & 0xff)) * 16777619u ^ (port >> 8)) * 16777619u;
	return &srv->conn_by_addr[h % CONN_BUCKETS];
}

/* An open connection to the address, for reuse (RFC 3261 §18.1.1): one
 * bucket, not a walk of every connection on each request to a TCP gateway. */
static struct sa_conn *conn_find_addr(struct sa_server *srv, const struct sa_flow *fl)
{
	for (struct sa_conn *c = *addr_bucket(srv, fl); c; c = c->addr_next)
		if (sa_route_same_peer(&c->flow, fl))
			return c;
	return NULL;
}

/* The counts a connection holds: its source's when it was accepted. */
static void conn_release(struct sa_server *srv, struct sa_connsrc *src, bool handshaking)
{
	if (src) {
		sa_connlimit_release(srv->connlimit, src, handshaking);
		return;
	}
	sa_connlimit_outgoing(srv->connlimit, -1);
	if (handshaking)
		sa_connlimit_outgoing_handshake(srv->connlimit, -1);
}

static void conn_free(struct sa_conn *c)
{
	struct sa_server *srv = c->srv;
	struct sa_conn **pp = &srv->conn_by_id[c->id % CONN_BUCKETS];
	while (*pp && *pp != c)
		pp = &(*pp)->next;
	if (*pp)
		*pp = c->next;
	for (pp = addr_bucket(srv, &c->flow); *pp && *pp != c; pp = &(*pp)->addr_next)
		;
	if (*pp)
		*pp = c->addr_next;
	if (c->src)
		sa_conndir_remove(srv, &c->flow);
	conn_release(srv, c->src, c->handshaking);
	if (c->timer)
		event_free(c->timer);
	bufferevent_free(c->bev);
	free(c->regs);
	free(c);
}

static void conn_timer_arm(struct sa_conn *c, uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
	if (c->timer)
		evtimer_add(c->timer, &tv);
}

/* CR and LF between messages: keep-alives. A CRLFCRLF is an RFC 5626 ping:
 * it counts as a message for the idle timeout and is answered with a CRLF
 * pong (RFC 3261 §7.5: a stack ignores CRLF before a start line, so a peer
 * that did not ask for it is not disturbed). */
static void conn_keepalive(struct sa_conn *c, size_t crlfs)
{
	c->crlfs += (unsigned)(crlfs > 64 ? 64 : crlfs);
	for (; c->crlfs >= 4; c->crlfs -= 4) {   /* a pong for each ping, glued or not */
		if (c->proven)
			c->last_msg_ms = sa_now_ms();
		bufferevent_write(c->bev, "\r\n", 2);
	}
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

static void conn_drained_cb(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(arg);
}

/* Stop reading, send what is queued (answers to earlier messages), then close. */
static void conn_close_after_write(struct sa_conn *c)
{
	evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
	bufferevent_disable(c->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
		conn_free(c);
		return;
	}
	bufferevent_setcb(c->bev, NULL, conn_drained_cb, conn_event_cb, c);
}

static void conn_read_cb(struct bufferevent *bev, void *arg);

/* The output drained to half of SA_CONN_WQ_PAUSE: read again, from what
 * waits in the input buffer first. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct sa_conn *c = arg;
	if (!c->paused || evbuffer_get_length(bufferevent_get_output(bev)) > SA_CONN_WQ_PAUSE / 2)
		return;
	c->paused = false;
	bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
	bufferevent_setcb(bev, conn_read_cb, NULL, conn_event_cb, c);
	bufferevent_enable(bev, EV_READ);
	conn_read_cb(bev, c);
}

/* A peer that sends and does not read: its answers are not queued without
 * end (RSS grew by gigabytes in a minute). Its messages wait in the socket
 * until it has read half of what is queued; it stays subject to the idle
 * timeout meanwhile (nothing it sends is read). */
static bool conn_pause_if_unread(struct sa_conn *c)
{
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) <= SA_CONN_WQ_PAUSE)
		return false;
	char a[64];
	uint16_t port;
	sa_flow_peer(&c->flow, a, sizeof(a), &port);
	c->paused = true;
	c->paused_out = evbuffer_get_length(bufferevent_get_output(c->bev));
	c->srv->metrics.tcp_reads_paused++;
	log_info("event=tcp_paused src=%s:%u queued=%zu hint=\"the peer does not read its answers: reading it "
	         "again once it has\"", a, port, evbuffer_get_length(bufferevent_get_output(c->bev)));
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setwatermark(c->bev, EV_WRITE, SA_CONN_WQ_PAUSE / 2, 0);
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	return true;
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct sa_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	for (;;) {
		size_t avail = evbuffer_get_length(in), skip;
		if (avail == 0 || c->paused || c->overflow)
			return;
		size_t look = avail > SA_SIP_MAX_MSG + 4 ? SA_SIP_MAX_MSG + 4 : avail;
		const char *data = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
		long n = sa_sip_frame(data, look, &skip);
		if (n < 0) {
			char a[64];
			uint16_t port;
			sa_flow_peer(&c->flow, a, sizeof(a), &port);
			log_warn("event=tcp_close reason=bad_framing src=%s:%u", a, port);
			conn_close_after_write(c);
			return;
		}
		if (n == 0) {
			evbuffer_drain(in, skip);
			if (skip > 0) {
				conn_keepalive(c, skip);
				conn_pause_if_unread(c);   /* pongs to a peer that reads none are bounded too */
			}
			return;
		}
		if (skip > 0)   /* a ping just before the message (sent together) gets its pong */
			conn_keepalive(c, skip);
		c->crlfs = 0;
		if (c->proven)
			c->last_msg_ms = sa_now_ms();
		/* copy out: the handler may free this connection */
		char *msg = malloc((size_t)n);
		if (!msg) {
			conn_free(c);
			return;
		}
		memcpy(msg, data + skip, (size_t)n);
		evbuffer_drain(in, skip + (size_t)n);
		struct sa_server *srv = c->srv;
		uint64_t id = c->id;
		sa_sip_input(srv, &c->flow, msg, (size_t)n);
		free(msg);
		if (!conn_find(srv, id) || conn_pause_if_unread(c))
			return;
	}
}

/* The TLS handshake is over: from now on the idle timeout applies. */
static void conn_tls_up(struct sa_conn *c)
{
	struct sa_server *srv = c->srv;
	if (c->handshaking) {
		c->handshaking = false;
		if (c->src)
			sa_connlimit_handshake_done(srv->connlimit, c->src);
		else
			sa_connlimit_outgoing_handshake(srv->connlimit, -1);
	}
	c->last_msg_ms = sa_now_ms();
	conn_timer_arm(c, (uint64_t)srv->cfg.tcp_idle_timeout * 1000);
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	log_debug("event=tls_up conn=%llu version=%s cipher=%s", (unsigned long long)c->id,
	          SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

/* A connection ended by its peer or an error: one we opened (towards a
 * gateway) may leave requests waiting for answers that cannot come. */
static void conn_gone(struct sa_conn *c)
{
	struct sa_server *srv = c->srv;
	struct sa_flow fl = c->flow;
	bool ours = c->src == NULL, connecting = c->connecting;
	conn_free(c);
	if (ours)
		sa_sip_flow_failed(srv, &fl, connecting);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct sa_conn *c = arg;
	if (what & BEV_EVENT_CONNECTED) {
		if (c->flow.proto == SA_PROTO_TLS)
			conn_tls_up(c);
		if (c->connecting) {
			c->connecting = false;
			sa_sip_flow_connected(c->srv, &c->flow);
		}
		return;
	}
	char a[64];
	uint16_t port;
	sa_flow_peer(&c->flow, a, sizeof(a), &port);
	if (c->flow.proto == SA_PROTO_TLS && ((what & BEV_EVENT_ERROR) || c->handshaking)) {
		unsigned long e = bufferevent_get_openssl_error(bev);
		char reason[160] = "";
		if (e)
			ERR_error_string_n(e, reason, sizeof(reason));
		log_info("event=tls_close src=%s:%u handshake=%s reason=\"%s\"", a, port,
		         c->handshaking ? "incomplete" : "done",
		         (what & BEV_EVENT_TIMEOUT) ? "timeout" : reason[0] ? reason : "eof");
		conn_gone(c);
		return;
	}
	log_debug("event=tcp_close src=%s:%u reason=%s", a, port,
	          (what & BEV_EVENT_TIMEOUT) ? "idle" : (what & BEV_EVENT_EOF) ? "eof" : "error");
	conn_gone(c);
}

/* The handshake deadline, or the idle check: quiet since the last complete
 * message for tcp_idle_timeout closes; otherwise look again when it would be. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_conn *c = arg;
	struct sa_server *srv = c->srv;
	char a[64];
	uint16_t port;
	sa_flow_peer(&c->flow, a, sizeof(a), &port);
	if (c->overflow) {
		srv->metrics.tcp_write_queue_closed++;
		log_warn("event=tcp_close src=%s:%u reason=write_queue_full queued=%zu hint=\"the peer reads nothing "
		         "of what is sent to it\"", a, port, evbuffer_get_length(bufferevent_get_output(c->bev)));
		struct sa_flow fl = c->flow;
		bool ours = c->src == NULL;
		conn_gone(c);
		if (!ours)   /* the requests dropped with its output are answered now, as a failed send */
			sa_sip_flow_failed(srv, &fl, false);
		return;
	}
	if (c->handshaking) {
		log_info("event=tls_close src=%s:%u handshake=incomplete reason=\"timeout\"", a, port);
		conn_gone(c);   /* ours: the requests waiting on it fail over or are answered */
		return;
	}
	uint64_t now = sa_now_ms(), idle = (uint64_t)srv->cfg.tcp_idle_timeout * 1000, quiet = now - c->last_msg_ms;
	if (quiet < idle) {
		conn_timer_arm(c, idle - quiet);
		return;
	}
	uint64_t keep = c->reg_keep_ms > c->call_keep_ms ? c->reg_keep_ms : c->call_keep_ms;
	if (keep > now) {   /* the PBX's registration or a call is its flow: requests come down it */
		conn_timer_arm(c, keep - now < idle ? keep - now : idle);
		return;
	}
	size_t out = evbuffer_get_length(bufferevent_get_output(c->bev));
	if (c->paused && out < c->paused_out) {   /* not read, but reading its answers: alive */
		c->paused_out = out;
		conn_timer_arm(c, idle);
		return;
	}
	srv->metrics.tcp_idle_closed++;
	if (c->paused)
		log_info("event=tcp_close src=%s:%u reason=idle_unread queued=%zu hint=\"paused, and the peer read "
		         "nothing of its answers for tcp_idle_timeout\"", a, port, out);
	else
		log_debug("event=tcp_close src=%s:%u reason=idle", a, port);
	conn_free(c);
}

static struct sa_connlimit_cfg conn_limits(const struct sa_config *cfg)
{
	return (struct sa_connlimit_cfg){ .max_connections = cfg->max_connections,
	                                  .max_connections_per_source = cfg->max_connections_per_source,
	                                  .max_handshakes = cfg->tls.max_handshakes,
	                                  .max_handshakes_per_source = cfg->tls.max_handshakes_per_source };
}

/* May this connection be had? Accepted ones count for their source too. */
static enum sa_conn_verdict conn_admit(struct sa_server *srv, const struct sockaddr *sa, enum sa_proto proto,
                                       bool accepting, struct sa_connsrc **src)
{
	struct sa_connlimit_cfg lc = conn_limits(&srv->cfg);
	*src = NULL;
	if (accepting) {
		const void *addr = sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
		                                             : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;
		return sa_connlimit_admit(srv->connlimit, &lc, addr, sa->sa_family == AF_INET6 ? 16 : 4,
		                          proto == SA_PROTO_TLS, src);
	}
	if (sa_connlimit_connections(srv->connlimit) >= lc.max_connections)
		return SA_CONN_FULL;
	sa_connlimit_outgoing(srv->connlimit, 1);
	if (proto == SA_PROTO_TLS)
		sa_connlimit_outgoing_handshake(srv->connlimit, 1);
	return SA_CONN_OK;
}

/* The name a gateway's certificate must carry: tls_server_name, else the
 * domain of `gateway = sip:NAME` (RFC 5922 §4: the URI's, not an SRV target's). */
static const char *gateway_cert_name(const struct sa_server *srv)
{
	if (srv->cfg.tls.gateway_name[0] || !srv->cfg.gateway.service)
		return srv->cfg.tls.gateway_name;
	return srv->cfg.gateway.e[0].host;
}

/* The SSL object for a new TLS connection: the gateway's certificate must
 * carry its name; a PBX's is rarely one a CA signed. */
static SSL *conn_ssl(struct sa_server *srv, bool accepting, bool to_gateway)
{
	SSL *ssl = SSL_new(accepting ? srv->tls_server : srv->tls_client);
	if (!ssl || accepting)
		return ssl;
	if (to_gateway) {
		SSL_set_tlsext_host_name(ssl, gateway_cert_name(srv));
		SSL_set1_host(ssl, gateway_cert_name(srv));
	} else {
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	}
	return ssl;
}

/* The bufferevent for a connection. Accepted TLS works on the socket itself
 * (alerts reach the peer before we close); an outgoing connection is made on
 * a plain socket first, with TLS as a filter on top once it is up. */
static struct bufferevent *conn_bev(struct sa_server *srv, evutil_socket_t fd, enum sa_proto proto,
                                    bool accepting, bool to_gateway, const struct sockaddr *sa, socklen_t len)
{
	struct bufferevent *bev = NULL;
	SSL *ssl = proto == SA_PROTO_TLS ? conn_ssl(srv, accepting, to_gateway) : NULL;

	if (proto == SA_PROTO_TLS && !ssl)
		return NULL;
	if (accepting && ssl) {
		bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	} else {
		bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (bev && !accepting && bufferevent_socket_connect(bev, sa, (int)len) < 0) {
			bufferevent_free(bev);
			bev = NULL;
		}
		if (bev && ssl) {
			struct bufferevent *tls = bufferevent_openssl_filter_new(srv->base, bev, ssl,
				BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
			if (!tls)
				bufferevent_free(bev);
			bev = tls;
		}
	}
	if (!bev) {
		SSL_free(ssl);
		return NULL;
	}
	if (ssl)
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* A connection, or NULL with *why (a limit, or no memory). */
static struct sa_conn *conn_new(struct sa_server *srv, evutil_socket_t fd, const struct sockaddr *sa,
                                socklen_t len, unsigned lidx, enum sa_proto proto, bool accepting,
                                enum sa_conn_verdict *why)
{
	struct sa_connsrc *src;
	struct sa_conn *c = NULL;
	*why = conn_admit(srv, sa, proto, accepting, &src);
	if (*why != SA_CONN_OK)
		return NULL;
	*why = SA_CONN_NO_MEMORY;
	if (!(c = calloc(1, sizeof(*c))) || !(c->timer = evtimer_new(srv->base, conn_timer_cb, c)))
		goto fail;
	bool to_gateway = !accepting && sa_gateways_has_addr(srv, sa);
	c->bev = conn_bev(srv, fd, proto, accepting, to_gateway, sa, len);
	if (!c->bev)
		goto fail;
	*why = SA_CONN_OK;
	c->srv = srv;
	c->src = src;
	c->id = (uint64_t)srv->worker << CONN_WORKER_SHIFT | ++srv->next_id;
	c->flow.proto = proto;
	c->flow.conn_id = c->id;
	c->flow.lidx = lidx;
	memcpy(&c->flow.ss, sa, len < sizeof(c->flow.ss) ? len : sizeof(c->flow.ss));
	c->flow.sslen = len;
	c->next = srv->conn_by_id[c->id % CONN_BUCKETS];
	srv->conn_by_id[c->id % CONN_BUCKETS] = c;
	struct sa_conn **ab = addr_bucket(srv, &c->flow);
	c->addr_next = *ab;
	*ab = c;
	c->last_msg_ms = sa_now_ms();
	c->proven = !accepting;
	/* a handshake gets little time: a peer that never finishes must not hold a slot */
	c->handshaking = proto == SA_PROTO_TLS;
	c->connecting = !accepting;
	conn_timer_arm(c, (uint64_t)(c->handshaking ? srv->cfg.tls.handshake_timeout : srv->cfg.tcp_idle_timeout) * 1000);
	bufferevent_setwatermark(c->bev, EV_READ, 0, SA_SIP_MAX_MSG + 4096);
	bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (accepting)   /* other workers send down it (an inbound call to the PBX on it) through us */
		sa_conndir_add(srv, &c->flow);
	return c;
fail:
	if (c && c->timer)
		event_free(c->timer);
	free(c);
	conn_release(srv, src, proto == SA_PROTO_TLS);
	return NULL;
}

/* Refused for a limit: closed at once, counted, one line (the log budget
 * keeps a flood of them from flooding the log). */
static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
	struct sa_listener *l = arg;
	struct sa_server *srv = l->srv;
	enum sa_conn_verdict why;
	if (conn_new(srv, fd, sa, (socklen_t)len, l->idx, l->ep.proto, true, &why))
		return;
	evutil_closesocket(fd);
	srv->metrics.tcp_refused[why]++;
	struct sa_flow fl = { .sslen = (socklen_t)len };
	memcpy(&fl.ss, sa, (size_t)len < sizeof(fl.ss) ? (size_t)len : sizeof(fl.ss));
	char a[64];
	uint16_t port;
	sa_flow_peer(&fl, a, sizeof(a), &port);
	log_warn("event=tcp_refused proto=%s reason=%s src=%s connections=%u handshakes=%u", sa_proto_name(l->ep.proto),
	         sa_conn_verdict_name(why), a, sa_connlimit_connections(srv->connlimit),
	         sa_connlimit_handshakes(srv->connlimit));
}

/* accept() failed for a reason other than a peer giving up: most often no
 * descriptor is left (EMFILE, ENFILE). The pending connection stays in the
 * backlog and the socket stays readable, so retrying at once would spin:
 * the listener rests for ACCEPT_BACKOFF_MS instead. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
	struct sa_listener *l = arg;
	int err = errno;
	struct timeval tv = { .tv_sec = 0, .tv_usec = ACCEPT_BACKOFF_MS * 1000 };
	evconnlistener_disable(lev);
	evtimer_add(l->resume, &tv);
	l->srv->metrics.accept_paused++;
	log_warn("event=accept_paused proto=%s port=%u error=\"%s\" retry_ms=%u", sa_proto_name(l->ep.proto),
	         l->ep.port, strerror(err), ACCEPT_BACKOFF_MS);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_listener *l = arg;
	evconnlistener_enable(l->lev);
}

/* Datagrams are read in batches: one recvmmsg per wake-up when traffic is
 * light, and never a read that only says "nothing more". */
#define RX_BATCH 8

struct sa_rx {
	char buf[RX_BATCH][SA_SIP_MAX_MSG + 1];
	struct sockaddr_storage from[RX_BATCH];
	struct iovec iov[RX_BATCH];
	struct mmsghdr msg[RX_BATCH];
};

static void udp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sa_listener *l = arg;
	struct sa_rx *rx = l->srv->rx;

	for (int round = 0; round < 8; round++) {
		for (int i = 0; i < RX_BATCH; i++) {
			rx->iov[i] = (struct iovec){ .iov_base = rx->buf[i], .iov_len = sizeof(rx->buf[i]) };
			rx->msg[i].msg_hdr = (struct msghdr){ .msg_name = &rx->from[i], .msg_namelen = sizeof(rx->from[i]),
			                                      .msg_iov = &rx->iov[i], .msg_iovlen = 1 };
		}
		int n = recvmmsg(fd, rx->msg, RX_BATCH, MSG_DONTWAIT, NULL);
		for (int i = 0; i < n; i++) {
			size_t len = rx->msg[i].msg_len;
			if (rx->msg[i].msg_hdr.msg_flags & MSG_TRUNC || len > SA_SIP_MAX_MSG) {
				log_warn("event=drop reason=datagram_too_large proto=udp");
				continue;
			}
			if (len < 4)
				continue;   /* keep-alive CRLFs and noise */
			struct sa_flow fl = { .proto = SA_PROTO_UDP, .lidx = l->idx,
			                      .sslen = rx->msg[i].msg_hdr.msg_namelen };
			memcpy(&fl.ss, &rx->from[i], sizeof(fl.ss));
			sa_sip_input(l->srv, &fl, rx->buf[i], len);
		}
		if (n < RX_BATCH)
			return;
	}
}

static int bind_udp(struct sa_server *srv, struct sa_listener *l)
{
	int one = 1;
	l->fd = socket(l->ep.ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* several workers: one socket each on the same address; the kernel
	 * spreads the sources over them (a source stays with one) */
	if (l->fd < 0 || (srv->nworkers > 1 && setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
	    bind(l->fd, (struct sockaddr *)&l->ep.ss, l->ep.sslen) < 0)
		return -1;
	int sz = 4 << 20;
	setsockopt(l->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	l->ev = event_new(srv->base, l->fd, EV_READ | EV_PERSIST, udp_read_cb, l);
	return l->ev && event_add(l->ev, NULL) == 0 ? 0 : -1;
}

static int bind_tcp(struct sa_server *srv, struct sa_listener *l)
{
	l->lev = evconnlistener_new_bind(srv->base, accept_cb, l,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE |
	                                 (srv->nworkers > 1 ? LEV_OPT_REUSEABLE_PORT : 0),
	                                 128, (struct sockaddr *)&l->ep.ss, (int)l->ep.sslen);
	l->resume = evtimer_new(srv->base, accept_resume_cb, l);
	if (!l->lev || !l->resume)
		return -1;
	evconnlistener_set_error_cb(l->lev, accept_error_cb);
	return 0;
}

static SSL_CTX *tls_ctx_base(const SSL_METHOD *method, const struct sa_tls_config *tc)
{
	SSL_CTX *ctx = SSL_CTX_new(method);
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, tc->min_version);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_set_cipher_list(ctx, tc->ciphers) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static void tls_log_error(const char *what, const char *path)
{
	char reason[200] = "";
	ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
	ERR_clear_error();
	log_err("event=tls_config_failed what=%s file=\"%s\" reason=\"%s\"", what, path, reason);
}

/* What an operator should hear at a start or reload, before clients do: a
 * certificate past its end (every client that checks it refuses), or
 * ending within two weeks; ciphers at security level 0 (anonymous and
 * export suites). Said, not refused: the files are the operator's. */
static void tls_server_warn(SSL_CTX *ctx, const struct sa_tls_config *tc)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	int days = 0, secs = 0;
	if (x && ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)) == 1) {
		if (days < 0 || secs < 0)
			log_warn("event=tls_certificate_expired file=\"%s\" days_ago=%d hint=\"clients that check it refuse "
			         "every connection: renew it and reload\"", tc->certificate, -days);
		else if (days < 14)
			log_warn("event=tls_certificate_expiring file=\"%s\" days_left=%d", tc->certificate, days);
	}
	if (SSL_CTX_get_security_level(ctx) == 0)
		log_warn("event=tls_weak_ciphers ciphers=\"%s\" hint=\"security level 0 lets in anonymous and export "
		         "suites: leave ciphers at its default\"", tc->ciphers);
}

/* The server context: our certificate and key, optionally client verification. */
SSL_CTX *sa_transport_tls_server_ctx(const struct sa_tls_config *tc)
{
	SSL_CTX *ctx = tls_ctx_base(TLS_server_method(), tc);
	if (!ctx) {
		tls_log_error("ciphers", tc->ciphers);
		return NULL;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, tc->certificate) != 1) {
		tls_log_error("certificate", tc->certificate);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, tc->private_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		tls_log_error("private_key", tc->private_key);
		goto fail;
	}
	tls_server_warn(ctx, tc);
	SSL_CTX_set_num_tickets(ctx, 0);
	/* a TLS 1.2 session resumed by a client that verified its certificate
	 * once: without an id context OpenSSL refuses every resumption when
	 * client certificates are asked for ("session id context uninitialized") */
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sipauthd", 8);
	if (tc->client_ca[0]) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(tc->client_ca);
		if (SSL_CTX_load_verify_locations(ctx, tc->client_ca, NULL) != 1 || !names) {
			sk_X509_NAME_pop_free(names, X509_NAME_free);
			tls_log_error("client_ca", tc->client_ca);
			goto fail;
		}
		/* named in the certificate request: a PBX with several certificates picks the one */
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* The client context: the gateway's certificate is verified (system store or tls_ca). */
static SSL_CTX *tls_client_ctx(const struct sa_tls_config *tc)
{
	SSL_CTX *ctx = tls_ctx_base(TLS_client_method(), tc);
	if (!ctx)
		return NULL;
	int ok = tc->gateway_ca[0] ? SSL_CTX_load_verify_locations(ctx, tc->gateway_ca, NULL)
	                           : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		tls_log_error("tls_ca", tc->gateway_ca);
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

int sa_transport_tls_prepare(struct sa_server *srv, const struct sa_tls_config *tc, struct sa_tls_pair *p)
{
	bool serving = false;
	for (unsigned i = 0; i < srv->cfg.nlisten; i++)
		serving |= srv->cfg.listen[i].proto == SA_PROTO_TLS;
	p->server = serving ? sa_transport_tls_server_ctx(tc) : NULL;
	p->client = tls_client_ctx(tc);
	if ((serving && !p->server) || !p->client) {
		sa_transport_tls_drop(p);
		return -1;
	}
	return 0;
}

void sa_transport_tls_commit(struct sa_server *srv, struct sa_tls_pair *p)
{
	/* connections hold their own reference: they go on with the old context */
	SSL_CTX_free(srv->tls_server);
	SSL_CTX_free(srv->tls_client);
	srv->tls_server = p->server;
	srv->tls_client = p->client;
	p->server = p->client = NULL;
}

void sa_transport_tls_drop(struct sa_tls_pair *p)
{
	SSL_CTX_free(p->server);
	SSL_CTX_free(p->client);
	p->server = p->client = NULL;
}

int sa_transport_tls_reload(struct sa_server *srv, const struct sa_tls_config *tc)
{
	struct sa_tls_pair p;
	if (sa_transport_tls_prepare(srv, tc, &p) < 0)
		return -1;
	sa_transport_tls_commit(srv, &p);
	return 0;
}

int sa_transport_tls_take(struct sa_server *w, const struct sa_server *from)
{
	if ((from->tls_server && SSL_CTX_up_ref(from->tls_server) != 1) ||
	    (from->tls_client && SSL_CTX_up_ref(from->tls_client) != 1))
		return -1;
	SSL_CTX_free(w->tls_server);
	SSL_CTX_free(w->tls_client);
	w->tls_server = from->tls_server;
	w->tls_client = from->tls_client;
	return 0;
}

/* Several workers share each port with SO_REUSEPORT, which would also let a
 * second sipauthd share it and take part of the traffic unseen: worker 0
 * first binds each address alone (and lets it go), which fails while
 * anything holds it. A stream probe may reuse a port a closed connection
 * left in TIME_WAIT, as the listener itself does. */
static int port_free(const struct sa_endpoint *ep)
{
	int one = 1, stream = ep->proto != SA_PROTO_UDP;
	int fd = socket(ep->ss.ss_family, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int rc = stream ? setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) : 0;
	if (rc == 0)
		rc = bind(fd, (const struct sockaddr *)&ep->ss, ep->sslen);
	int err = errno;
	close(fd);
	errno = err;
	return rc;
}

int sa_transport_start(struct sa_server *srv)
{
	uint64_t seed;
	srv->conn_by_id = calloc(CONN_BUCKETS, sizeof(*srv->conn_by_id));
	srv->conn_by_addr = calloc(CONN_BUCKETS, sizeof(*srv->conn_by_addr));
	srv->rx = malloc(sizeof(*srv->rx));
	if (!srv->conn_by_id || !srv->conn_by_addr || !srv->rx)
		return -1;
	if (srv->worker > 0) {
		/* the limits and TLS contexts are worker 0's */
		if (sa_transport_tls_take(srv, sa_worker_at(srv, 0)) < 0)
			return -1;
	} else {
		if (RAND_bytes((unsigned char *)&seed, sizeof(seed)) != 1)
			return -1;
		srv->connlimit = sa_connlimit_new(srv->cfg.max_connections, seed);
		if (!srv->connlimit || sa_transport_tls_reload(srv, &srv->cfg.tls) < 0)
			return -1;
	}
	/* every address probed before any is bound: ours would hold the next ones' ports */
	for (unsigned i = 0; srv->worker == 0 && srv->nworkers > 1 && i < srv->cfg.nlisten; i++) {
		const struct sa_endpoint *ep = &srv->cfg.listen[i];
		if (ep->port != 0 && port_free(ep) < 0) {
			log_err("event=listen_failed listen=%s:%s:%u error=\"%s\"", sa_proto_name(ep->proto), ep->host,
			        ep->port, strerror(errno));
			return -1;
		}
	}
	for (unsigned i = 0; i < srv->cfg.nlisten; i++) {
		struct sa_listener *l = &srv->listeners[i];
		l->ep = srv->cfg.listen[i];
		l->srv = srv;
		l->idx = i;
		l->fd = -1;
		int rc = l->ep.proto == SA_PROTO_UDP ? bind_udp(srv, l) : bind_tcp(srv, l);
		if (rc < 0) {
			log_err("event=listen_failed listen=%s:%s:%u error=\"%s\"", sa_proto_name(l->ep.proto),
			        l->ep.host, l->ep.port, strerror(errno));
			return -1;
		}
		srv->nlisteners++;
		if (srv->worker == 0)   /* the others listen on the same addresses */
			log_info("event=listening proto=%s addr=%s port=%u", sa_proto_name(l->ep.proto), l->ep.host,
			         l->ep.port);
		/* what lib/route knows a URI naming us by (this worker's own copies) */
		srv->self.addr[i] = (struct sa_route_listener){ .host = l->ep.host, .port = l->ep.port };
		srv->self.n = srv->nlisteners;
	}
	srv->self.domain = srv->domain;
	return 0;
}
_Static_assert(SA_MAX_LISTEN <= SA_ROUTE_SELF_MAX, "lib/route knows every listener");

void sa_transport_stop(struct sa_server *srv)
{
	for (unsigned i = 0; i < srv->nlisteners; i++) {
		struct sa_listener *l = &srv->listeners[i];
		if (l->ev)
			event_free(l->ev);
		if (l->fd >= 0)
			close(l->fd);
		if (l->lev)
			evconnlistener_free(l->lev);
		if (l->resume)
			event_free(l->resume);
	}
	srv->nlisteners = 0;
	srv->self.n = 0;
	if (srv->conn_by_id)
		for (unsigned b = 0; b < CONN_BUCKETS; b++)
			while (srv->conn_by_id[b])
				conn_free(srv->conn_by_id[b]);
	free(srv->conn_by_id);
	free(srv->conn_by_addr);
	srv->conn_by_id = srv->conn_by_addr = NULL;
	if (srv->worker == 0)
		sa_connlimit_free(srv->connlimit);
	srv->connlimit = NULL;
	free(srv->rx);
	srv->rx = NULL;
	SSL_CTX_free(srv->tls_server);
	SSL_CTX_free(srv->tls_client);
	srv->tls_server = srv->tls_client = NULL;
}

int sa_transport_listener_to(struct sa_server *srv, enum sa_proto proto, int family)
{
	for (unsigned i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i].ep.proto == proto && srv->listeners[i].ep.ss.ss_family == family)
			return (int)i;
	if (proto == SA_PROTO_UDP)
		return -1;   /* a datagram goes out of a socket of its address's family */
	return (int)sa_transport_listener_for(srv, proto);   /* a connection has a socket of its own */
}

unsigned sa_transport_listener_for(struct sa_server *srv, enum sa_proto proto)
{
	for (unsigned i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i].ep.proto == proto)
			return i;
	return 0;
}

/* An outgoing TCP connection; the bufferevent queues writes until it is up. */
static struct sa_conn *conn_connect(struct sa_server *srv, const struct sa_flow *fl)
{
	enum sa_conn_verdict why;
	int li = sa_transport_listener_to(srv, fl->proto, fl->ss.sa.sa_family);
	return conn_new(srv, -1, &fl->ss.sa, fl->sslen,
	                li >= 0 ? (unsigned)li : sa_transport_listener_for(srv, fl->proto), fl->proto, false, &why);
}

int sa_transport_send(struct sa_server *srv, const struct sa_flow *fl, const char *buf, size_t len)
{
	if (fl->proto == SA_PROTO_UDP) {
		unsigned li = fl->lidx < srv->nlisteners && srv->listeners[fl->lidx].ep.proto == SA_PROTO_UDP
			? fl->lidx : sa_transport_listener_for(srv, SA_PROTO_UDP);
		struct sa_listener *l = &srv->listeners[li];
		if (l->ep.proto != SA_PROTO_UDP)
			return -1;
		return sendto(l->fd, buf, len, MSG_DONTWAIT, &fl->ss.sa, fl->sslen) == (ssize_t)len ? 0 : -1;
	}
	if (fl->conn_id && conn_worker(fl->conn_id) != srv->worker && srv->workers) {
		/* another worker's connection (a PBX's flow): its loop writes it */
		sa_workers_send(srv, conn_worker(fl->conn_id), fl, buf, len);
		return 0;
	}
	struct sa_conn *c = fl->conn_id ? conn_find(srv, fl->conn_id) : NULL;
	if (!c)
		c = conn_find_addr(srv, fl);
	int owner;
	if (!c && srv->workers && (owner = sa_conndir_owner(srv, fl)) >= 0 && (unsigned)owner != srv->worker) {
		/* a connection the PBX opened to another worker: never a new one to its port */
		sa_workers_send(srv, (unsigned)owner, fl, buf, len);
		return 0;
	}
	if (!c)
		c = conn_connect(srv, fl);
	if (!c || c->overflow)
		return -1;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) + len > SA_CONN_WQ_MAX) {
		/* closed from the loop (the timer), not here: the caller may be
		 * answering a message this connection brought */
		c->overflow = true;
		bufferevent_disable(c->bev, EV_READ);
		event_active(c->timer, EV_TIMEOUT, 1);
		return -1;
	}
	if (bufferevent_write(c->bev, buf, len) != 0)
		return -1;
	return c->connecting ? 1 : 0;
}

struct keep_job {
	struct sa_flow fl;
	enum sa_keep what;
	uint64_t cred;
	uint64_t for_ms;
};

/* The credential's registrations on c live until `until` (0: none left). */
static void reg_keep_set(struct sa_conn *c, uint64_t cred, uint64_t until, uint64_t now)
{
	unsigned i = 0;
	while (i < c->nregs && c->regs[i].cred != cred)
		i++;
	if (i == c->nregs && until) {   /* a new one: in a slot that has expired, or a new slot */
		for (i = 0; i < c->nregs && c->regs[i].until_ms > now; i++)
			;
		if (i == c->nregs && c->nregs < SA_CONN_REG_KEEPS) {
			struct reg_keep *r = realloc(c->regs, (c->nregs + 1) * sizeof(*r));
			if (r) {
				c->regs = r;
				c->nregs++;
			}
		}
	}
	if (i < c->nregs)
		c->regs[i] = (struct reg_keep){ cred, until };
	else if (until > c->reg_over_ms)
		c->reg_over_ms = until;   /* no room: kept for the latest, never released early */
	c->reg_keep_ms = c->reg_over_ms;
	for (i = 0; i < c->nregs; i++)
		if (c->regs[i].until_ms > c->reg_keep_ms)
			c->reg_keep_ms = c->regs[i].until_ms;
}

static void keep_here(struct sa_server *srv, const struct sa_flow *fl, enum sa_keep what, uint64_t cred,
                      uint64_t for_ms)
{
	struct sa_conn *c = fl->conn_id ? conn_find(srv, fl->conn_id) : NULL;
	if (!c)
		c = conn_find_addr(srv, fl);
	if (!c)
		return;
	uint64_t now = sa_now_ms(), until = for_ms ? now + for_ms : 0;
	if (what == SA_KEEP_REGISTRATION)
		reg_keep_set(c, cred, until, now);
	else if (until > c->call_keep_ms)
		c->call_keep_ms = until;
}

static void keep_job_run(struct sa_server *w, void *arg)
{
	struct keep_job *j = arg;
	keep_here(w, &j->fl, j->what, j->cred, j->for_ms);
	free(j);
}

/* FNV-1a of a credential id: which entry of a connection's registrations
 * is its (a collision only shares an entry). */
static uint64_t cred_key(const char *id)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; id && *id; id++)
		h = (h ^ (unsigned char)*id) * 0x100000001b3ULL;
	return h;
}

void sa_transport_keep(struct sa_server *srv, const struct sa_flow *fl, enum sa_keep what, const char *cred_id,
                       uint64_t for_ms)
{
	if (fl->proto == SA_PROTO_UDP)
		return;
	uint64_t cred = what == SA_KEEP_REGISTRATION ? cred_key(cred_id) : 0;
	int owner = fl->conn_id ? (int)conn_worker(fl->conn_id) : srv->workers ? sa_conndir_owner(srv, fl) : -1;
	if (owner < 0 || (unsigned)owner == srv->worker || !srv->workers) {
		keep_here(srv, fl, what, cred, for_ms);
		return;
	}
	struct keep_job *j = malloc(sizeof(*j));   /* that worker's connection: its loop marks it */
	if (!j)
		return;
	*j = (struct keep_job){ .fl = *fl, .what = what, .cred = cred, .for_ms = for_ms };
	if (!sa_workers_post(srv, (unsigned)owner, keep_job_run, j))
		free(j);
}

void sa_transport_proven(struct sa_server *srv, const struct sa_flow *fl)
{
	if (fl->proto == SA_PROTO_UDP || !fl->conn_id || conn_worker(fl->conn_id) != srv->worker)
		return;
	struct sa_conn *c = conn_find(srv, fl->conn_id);
	if (c && !c->proven) {
		c->proven = true;
		c->last_msg_ms = sa_now_ms();
	}
}

void sa_transport_gauges(const struct sa_server *srv, struct sa_metrics *m)
{
	m->tcp_connections = sa_connlimit_connections(srv->connlimit);
	m->tls_handshakes = sa_connlimit_handshakes(srv->connlimit);
}

bool sa_transport_flow_open(struct sa_server *srv, const struct sa_flow *fl)
{
	if (fl->proto == SA_PROTO_UDP)
		return true;
	if (fl->conn_id && conn_worker(fl->conn_id) == srv->worker)
		return conn_find(srv, fl->conn_id) != NULL || conn_find_addr(srv, fl) != NULL;
	if (!fl->conn_id && conn_find_addr(srv, fl))
		return true;
	return srv->workers && sa_conndir_owner(srv, fl) >= 0;   /* one a PBX opened to another worker */
}

bool sa_transport_conn_open(struct sa_server *srv, uint64_t conn_id)
{
	if (conn_worker(conn_id) != srv->worker)
		return true;   /* another worker's: it finds out when it writes (and drops what it cannot send) */
	return conn_find(srv, conn_id) != NULL;
}
