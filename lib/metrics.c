/* metrics.c: the Prometheus text exposition of one sa_metrics snapshot. */
#include "metrics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(SA_M_PUBLISH < SA_METRICS_METHODS, "sa_metrics.sip_requests is too small for enum sa_method");

static const char *const transport_names[SA_METRICS_TRANSPORTS] = { "udp", "tcp", "tls" };

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP sipauthd_%s %s\n# TYPE sipauthd_%s %s\n", name, help, name, type);
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
	head(f, name, "counter", help);
	fprintf(f, "sipauthd_%s %" PRIu64 "\n", name, v);
}

static void gauge(FILE *f, const char *name, const char *help, int64_t v)
{
	head(f, name, "gauge", help);
	fprintf(f, "sipauthd_%s %" PRId64 "\n", name, v);
}

/* Every named series even at zero, so that rate() sees it from the start. */
static void sip_requests(FILE *f, const struct sa_metrics *m)
{
	head(f, "sip_requests_total", "counter", "SIP requests received, by method.");
	for (int i = 0; i <= SA_M_PUBLISH; i++)
		fprintf(f, "sipauthd_sip_requests_total{method=\"%s\"} %" PRIu64 "\n", sa_method_text((enum sa_method)i),
		        m->sip_requests[i]);
	head(f, "sip_requests_by_transport_total", "counter", "SIP requests received, by transport.");
	for (int i = 0; i < SA_METRICS_TRANSPORTS; i++)
		fprintf(f, "sipauthd_sip_requests_by_transport_total{transport=\"%s\"} %" PRIu64 "\n",
		        transport_names[i], m->sip_requests_by_transport[i]);
}

/* Stale nonces are a right password with an old nonce: a normal part of
 * digest, so they are counted apart from the failures an operator acts on. */
static void auth(FILE *f, const struct sa_metrics *m)
{
	counter(f, "auth_challenges_total", "Digest challenges sent (401/407).", m->challenges);
	counter(f, "auth_successes_total", "Requests whose digest credentials were accepted.", m->auth_ok);
	counter(f, "auth_by_address_total", "Requests a trunk's ip_authentication let through without a digest.",
	        m->auth_by_address);
	head(f, "trunk_refusals_total", "counter",
	     "Requests refused by a trunk's controls (not overload), by reason.");
	for (int v = SA_POLICY_TLS_REQUIRED; v < SA_POLICY_VERDICT_COUNT; v++)
		fprintf(f, "sipauthd_trunk_refusals_total{reason=\"%s\"} %" PRIu64 "\n",
		        sa_policy_verdict_name((enum sa_policy_verdict)v), m->trunk_refused[v]);
	head(f, "auth_failures_total", "counter", "Digest authentication failures, by reason.");
	for (int r = SA_AUTH_NONE + 1; r < SA_AUTH_REASON_COUNT; r++)
		if (r != SA_AUTH_STALE_NONCE)
			fprintf(f, "sipauthd_auth_failures_total{reason=\"%s\"} %" PRIu64 "\n",
			        sa_auth_reason_name((enum sa_auth_reason)r), m->auth_fail[r]);
	counter(f, "auth_stale_nonces_total", "Right answers to an expired nonce, challenged again with stale=true.",
	        m->auth_fail[SA_AUTH_STALE_NONCE]);
	head(f, "auth_stale_nonces_by_cause_total", "counter",
	     "Stale nonces by cause: expired, unknown_key, other_node (another fleet node's), table_full, future (a clock put back).");
	for (int s = SA_STALE_NONE + 1; s < SA_STALE_COUNT; s++)
		fprintf(f, "sipauthd_auth_stale_nonces_by_cause_total{cause=\"%s\"} %" PRIu64 "\n",
		        sa_auth_stale_name((enum sa_auth_stale)s), m->auth_stale[s]);
}

/* Sparse: only the statuses that occurred. */
static void by_status(FILE *f, const char *name, const char *help, const uint64_t *v)
{
	head(f, name, "counter", help);
	for (int s = 100; s < SA_METRICS_STATUSES; s++)
		if (v[s] != 0)
			fprintf(f, "sipauthd_%s{status=\"%d\"} %" PRIu64 "\n", name, s, v[s]);
}

static void registrations_and_calls(FILE *f, const struct sa_metrics *m)
{
	counter(f, "registrations_total", "REGISTER requests that added or removed bindings.", m->registrations);
	if (m->registrations_active >= 0)
		gauge(f, "registrations_active", "Current bindings (registered contacts).", m->registrations_active);
	gauge(f, "calls_active", "Calls in progress through the proxy.", (int64_t)m->calls_active);
	counter(f, "calls_started_total", "Calls established.", m->calls_started);
	counter(f, "calls_revoked_total", "Calls ended because their credential was deleted.", m->calls_revoked);
	counter(f, "credential_rotations_total", "Credential passwords rotated over the API.", m->credential_rotations);
	counter(f, "calls_reaped_total", "Calls ended at the maximum call age.", m->calls_reaped);
}

static void abuse(FILE *f, const struct sa_metrics *m)
{
	counter(f, "bans_total", "Sources banned for repeated authentication failures.", m->bans);
	counter(f, "banned_requests_dropped_total", "Requests from banned sources, dropped unanswered.",
	        m->banned_dropped);
	gauge(f, "banned_sources", "Sources banned now.", (int64_t)m->banned_active);
}

static void transactions(FILE *f, const struct sa_metrics *m)
{
	gauge(f, "sip_transactions", "SIP transactions kept (in progress and finished).", (int64_t)m->transactions);
	gauge(f, "sip_transaction_bytes", "Bytes of SIP messages the transactions keep.", (int64_t)m->transaction_bytes);
	counter(f, "sip_transactions_refused_total",
	        "Requests answered 503 because their source, credential or the transaction memory was at its limit.",
	        m->transactions_refused);
	counter(f, "sip_transactions_evicted_total", "Finished transactions dropped early to make room.",
	        m->transactions_evicted);
	counter(f, "sip_responses_refused_total", "Responses dropped: not from the peer the request was sent to.",
	        m->responses_refused);
	counter(f, "sip_failover_late_answers_total",
	        "Answers from a gateway that failover had left for silence: ringing CANCELled, 2xx ACKed and ended with BYE.",
	        m->failover_late_answers);
	counter(f, "sip_inbound_failovers_total",
	        "Inbound INVITEs moved on to the trunk's next registration: the PBX answered 503, could not be reached "
	        "or said nothing within [registrar] failover_timeout_ms.",
	        m->inbound_failovers);
	head(f, "sip_byes_total", "counter",
	     "BYEs sipauthd sent itself (calls ended from the middle), by outcome: a final answer, or none within 32 s.");
	fprintf(f, "sipauthd_sip_byes_total{outcome=\"answered\"} %" PRIu64 "\n", m->byes_answered);
	fprintf(f, "sipauthd_sip_byes_total{outcome=\"timeout\"} %" PRIu64 "\n", m->byes_timed_out);
	counter(f, "sip_bye_retransmissions_total", "Retransmissions of sipauthd's own BYEs (UDP).",
	        m->bye_retransmissions);
	gauge(f, "sip_byes_pending", "sipauthd's own BYEs not answered yet, queued or sent.", (int64_t)m->byes_pending);
	gauge(f, "sip_byes_queued", "sipauthd's own BYEs waiting for their turn ([proxy] bye_rate per destination).",
	      (int64_t)m->byes_queued);
	counter(f, "sip_call_byes_refused_total",
	        "BYEs from an end of a call that the other end refused (a failure other than 408 or 481): the call goes on.",
	        m->call_byes_refused);
	counter(f, "relay_refused_total",
	        "In-dialog requests refused: not from an end of the call, or routed outside it.", m->relay_refused);
	counter(f, "fleet_relayed_total",
	        "Inbound requests relayed to the fleet node that holds the PBX's flow.", m->fleet_relayed);
	gauge(f, "sip_workers", "SIP workers (event loops, one per core by default).", (int64_t)m->workers);
	counter(f, "sip_worker_handoffs_total",
	        "Messages that reached one worker and were handed to the worker holding their transaction or call.",
	        m->worker_handoffs);
	counter(f, "sip_worker_sends_total",
	        "Messages sent down a TCP/TLS connection another worker holds, through that worker.", m->worker_sends);
	fprintf(f, "# HELP sipauthd_sip_worker_requests_total SIP requests each worker handled (its share of the load).\n"
	           "# TYPE sipauthd_sip_worker_requests_total counter\n");
	for (uint64_t w = 0; w < m->workers && w < SA_METRICS_WORKERS; w++)
		fprintf(f, "sipauthd_sip_worker_requests_total{worker=\"%llu\"} %llu\n", (unsigned long long)w,
		        (unsigned long long)m->worker_requests[w]);
}

/* used / size is the alarm: new records are refused above 0.9 (SA_STORE_HEADROOM_PERCENT). */
static void store(FILE *f, const struct sa_metrics *m)
{
	if (m->store_map_size == 0)
		return;
	gauge(f, "store_map_size_bytes", "Size of the store's map (the most data it can hold).",
	      (int64_t)m->store_map_size);
	gauge(f, "store_map_used_bytes", "Bytes of the map in pages that hold data.", (int64_t)m->store_used);
	head(f, "store_map_used_ratio", "gauge", "Share of the map that holds data; new records are refused above 0.9.");
	fprintf(f, "sipauthd_store_map_used_ratio %.4f\n", (double)m->store_used / (double)m->store_map_size);
	counter(f, "store_write_failures_total", "Store writes that failed or were refused (map or disk full, I/O).",
	        m->store_write_failures);
	if (m->store_runtime_map_size == 0)
		return;
	gauge(f, "store_runtime_map_size_bytes",
	      "Size of the runtime file's map (registrations and the failure log: the most it can hold).",
	      (int64_t)m->store_runtime_map_size);
	head(f, "store_runtime_map_used_ratio", "gauge",
	     "Share of the runtime file's map that holds data; new registrations are refused above 0.9.");
	fprintf(f, "sipauthd_store_runtime_map_used_ratio %.4f\n",
	        (double)m->store_runtime_used / (double)m->store_runtime_map_size);
}

static void credential_index(FILE *f, const struct sa_metrics *m)
{
	if (!m->credential_index)
		return;
	gauge(f, "credential_index_credentials",
	      "Credentials in the in-memory index (0 while it is built again, or once dropped: read from data.mdb).",
	      (int64_t)m->credential_index_credentials);
	gauge(f, "credential_index_bytes", "Memory mapped for the credential index.", (int64_t)m->credential_index_bytes);
	counter(f, "credential_index_rebuilds_total", "Times the index was built again, having fallen behind the change log.",
	        m->credential_index_rebuilds);
	counter(f, "credential_index_dropped_total", "Times the index was given up (no memory): finds read data.mdb.",
	        m->credential_index_dropped);
}

static void connections(FILE *f, const struct sa_metrics *m)
{
	gauge(f, "tcp_connections", "SIP TCP and TLS connections open.", (int64_t)m->tcp_connections);
	gauge(f, "tls_handshakes", "TLS handshakes in progress.", (int64_t)m->tls_handshakes);
	head(f, "tcp_refused_total", "counter", "SIP TCP/TLS connections closed at once on accept, by the limit reached.");
	for (int v = SA_CONN_OK + 1; v < SA_CONN_VERDICT_COUNT; v++)
		fprintf(f, "sipauthd_tcp_refused_total{reason=\"%s\"} %" PRIu64 "\n",
		        sa_conn_verdict_name((enum sa_conn_verdict)v), m->tcp_refused[v]);
	counter(f, "tcp_idle_closed_total", "SIP TCP/TLS connections closed after tcp_idle_timeout without a message.",
	        m->tcp_idle_closed);
	counter(f, "sip_next_hop_unreachable_total",
	        "Requests answered at once (480 towards a PBX, 503 towards the gateways): their next hop could not be "
	        "reached (a failed send or connection).", m->next_hop_unreachable);
	counter(f, "tcp_reads_paused_total",
	        "Times a SIP TCP/TLS connection was no longer read: 64 KiB of answers to it unread by its peer.",
	        m->tcp_reads_paused);
	counter(f, "tcp_write_queue_closed_total",
	        "SIP TCP/TLS connections closed with 4 MiB queued for a peer that does not read.", m->tcp_write_queue_closed);
	counter(f, "accept_paused_total", "Times a SIP listener rested after accept() failed (out of descriptors).",
	        m->accept_paused);
	gauge(f, "http_connections", "HTTP connections open (API and metrics).", (int64_t)m->http_connections);
	counter(f, "http_refused_total", "HTTP connections closed at once over [api] max_connections or max_connections_per_source.",
	        m->http_refused);
	counter(f, "api_rate_limited_total", "API requests answered 429: over their key's [api] rate_limit.",
	        m->api_rate_limited);
	gauge(f, "api_rate_limit_keys", "API keys (as presented, valid or not) with a rate-limit bucket.",
	      (int64_t)m->api_rate_limit_keys);
	counter(f, "log_lines_suppressed_total", "Log lines dropped over the per-call-site budget ([log] rate_limit).",
	        m->log_suppressed);
	gauge(f, "background_queue", "API requests waiting for or running on the store threads (off the SIP loop).",
	      (int64_t)m->work_queued);
	counter(f, "background_jobs_total", "Jobs the store threads ran (API requests, heap trims).", m->work_jobs);
	counter(f, "background_refused_total", "API requests answered 503: a store thread's queue was full.",
	        m->work_refused);
	fprintf(f, "# HELP sipauthd_background_busy_seconds_total Time the store threads spent on jobs and flushes.\n"
	           "# TYPE sipauthd_background_busy_seconds_total counter\n"
	           "sipauthd_background_busy_seconds_total %.6f\n", (double)m->work_busy_us / 1e6);
}

char *sa_metrics_render(const struct sa_metrics *m, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	if (f == NULL)
		return NULL;
	head(f, "build_info", "gauge", "Always 1; the version as a label.");
	fprintf(f, "sipauthd_build_info{version=\"%s\"} 1\n", m->version ? m->version : "unknown");
	gauge(f, "start_time_seconds", "When the daemon started, seconds since the epoch.", m->start_time);
	sip_requests(f, m);
	auth(f, m);
	registrations_and_calls(f, m);
	store(f, m);
	credential_index(f, m);
	abuse(f, m);
	by_status(f, "sip_rejected_total", "SIP error answers sipauthd gave itself, by status.", m->sip_rejected);
	counter(f, "sip_forwarded_total", "SIP messages forwarded.", m->sip_forwarded);
	counter(f, "sip_retransmissions_absorbed_total", "Retransmitted requests answered from transaction state (ACKs not counted).",
	        m->sip_retransmissions_absorbed);
	counter(f, "sip_failures_retransmitted_total",
	        "Failures to INVITEs sent again over UDP until their ACK came (Timer G).", m->sip_failures_retransmitted);
	transactions(f, m);
	by_status(f, "api_requests_total", "HTTP requests answered (API, dashboard, metrics, health), by status.",
	          m->api_requests);
	connections(f, m);
	if (ferror(f)) {
		fclose(f);
		free(buf);
		return NULL;
	}
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

int sa_metrics_appendf(char **buf, size_t *len, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -1;
	char *p = realloc(*buf, *len + (size_t)n + 1);
	if (!p)
		return -1;
	memcpy(p + *len, line, (size_t)n + 1);
	*buf = p;
	*len += (size_t)n;
	return 0;
}

/* One family with one sample: HELP, TYPE and the value. */
static int family(char **buf, size_t *len, const char *name, const char *type, const char *help, uint64_t v)
{
	return sa_metrics_appendf(buf, len, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name, type,
	                          name, v);
}

int sa_metrics_fleet_render(const struct sa_metrics_fleet *f, char **buf, size_t *len)
{
	int rc = 0;

	rc |= family(buf, len, "sipauthd_cluster_connected", "gauge",
	             "Whether the feed is connected to the fleet's database (1) or not (0).", f->up);
	rc |= sa_metrics_appendf(buf, len, "# HELP sipauthd_cluster_state The feed's connection state (1 for the current one).\n"
	                                   "# TYPE sipauthd_cluster_state gauge\nsipauthd_cluster_state{state=\"%s\"} 1\n",
	                         f->state);
	rc |= family(buf, len, "sipauthd_cluster_applied_seq", "gauge",
	             "The last change log sequence applied to the local store.", f->applied);
	rc |= family(buf, len, "sipauthd_cluster_head_seq", "gauge",
	             "The database's last change log sequence, at the feed's last look.", f->head);
	rc |= family(buf, len, "sipauthd_cluster_lag_changes", "gauge",
	             "Changes the database had that the local store had not applied, at the last look.",
	             f->head > f->applied ? f->head - f->applied : 0);
	rc |= sa_metrics_appendf(buf, len, "# HELP sipauthd_cluster_lag_seconds From the last change's write in the "
	                                   "database to its commit in the local store.\n"
	                                   "# TYPE sipauthd_cluster_lag_seconds gauge\nsipauthd_cluster_lag_seconds %.3f\n",
	                         (double)(f->lag_ms > 0 ? f->lag_ms : 0) / 1000.0);
	rc |= family(buf, len, "sipauthd_cluster_changes_applied_total", "counter",
	             "Changes applied from the change log (full resyncs not counted).", f->changes_applied);
	rc |= family(buf, len, "sipauthd_cluster_resyncs_total", "counter",
	             "Full resyncs: the change log no longer reached back to the local store.", f->resyncs);
	rc |= family(buf, len, "sipauthd_cluster_notifications_total", "counter",
	             "NOTIFYs received from the database.", f->notifications);
	rc |= family(buf, len, "sipauthd_cluster_connects_total", "counter", "Connections made to the database.",
	             f->connects);
	rc |= family(buf, len, "sipauthd_cluster_connect_failures", "gauge",
	             "Failed connection attempts since the last connection.", f->connect_failures);
	rc |= family(buf, len, "sipauthd_cluster_query_failures_total", "counter", "Feed queries the database refused.",
	             f->query_failures);
	rc |= family(buf, len, "sipauthd_cluster_apply_failures_total", "counter",
	             "Batches of changes the local store could not apply (tried again).", f->apply_failures);
	rc |= family(buf, len, "sipauthd_cluster_nodes_alive", "gauge",
	             "Nodes alive at the last heartbeat (this one included): each enforces its share of a trunk's limits.",
	             f->nodes_alive);
	rc |= family(buf, len, "sipauthd_cluster_node_name_conflicts_total", "counter",
	             "Heartbeats that found this node's row written by another process: another node has its name.",
	             f->name_conflicts);
	rc |= sa_metrics_appendf(buf, len, "# HELP sipauthd_cluster_clock_offset_seconds The database's clock minus this "
	                                   "host's, at the last heartbeat (the nodes' times are compared: keep it near 0).\n"
	                                   "# TYPE sipauthd_cluster_clock_offset_seconds gauge\n"
	                                   "sipauthd_cluster_clock_offset_seconds %.3f\n",
	                         (double)f->clock_offset_ms / 1000.0);
	rc |= family(buf, len, "sipauthd_cluster_nonce_key", "gauge",
	             "The fleet's nonce key id this node issues nonces with (0: its own, until the database's is read).",
	             f->nonce_key);
	rc |= family(buf, len, "sipauthd_cluster_nonce_key_loads_total", "counter",
	             "Nonce keys taken from the database (at the first heartbeat, and after each rotation).",
	             f->nonce_key_loads);
	rc |= family(buf, len, "sipauthd_cluster_auth_failures_pushed_total", "counter",
	             "Auth failures written to the fleet's failure log.", f->failures_pushed);
	rc |= family(buf, len, "sipauthd_cluster_auth_failures_lost_total", "counter",
	             "Auth failures not written to the fleet's log (queue full, or the database away when sent); "
	             "the node's own log has them.", f->failures_lost);
	rc |= family(buf, len, "sipauthd_cluster_auth_failures_queued", "gauge",
	             "Auth failures waiting to be written to the fleet's log.", f->failures_queued);
	rc |= family(buf, len, "sipauthd_cluster_calls_pushed_total", "counter",
	             "Calls started, changed or ended written to the fleet's calls list (after each connect: all).",
	             f->calls_pushed);
	rc |= family(buf, len, "sipauthd_cluster_deliveries_pushed_total", "counter",
	             "Webhook delivery states (new, and each attempt's outcome) written to the fleet's delivery list.",
	             f->deliveries_pushed);
	rc |= family(buf, len, "sipauthd_cluster_deliveries_lost_total", "counter",
	             "Webhook delivery states not written to the fleet's list (queue full, or the database away when "
	             "sent); the node still sends the deliveries.", f->deliveries_lost);
	return rc;
}

#define ADD(f) into->f += w->f
#define ADD_ALL(a) for (size_t i_ = 0; i_ < sizeof(into->a) / sizeof(into->a[0]); i_++) into->a[i_] += w->a[i_]

void sa_metrics_add(struct sa_metrics *into, const struct sa_metrics *w)
{
	ADD_ALL(sip_requests);
	ADD_ALL(sip_requests_by_transport);
	ADD(challenges);
	ADD(auth_ok);
	ADD_ALL(auth_fail);
	ADD_ALL(auth_stale);
	ADD(auth_by_address);
	ADD_ALL(trunk_refused);
	ADD(registrations);
	ADD_ALL(sip_rejected);
	ADD(sip_forwarded);
	ADD(sip_retransmissions_absorbed);
	ADD(sip_failures_retransmitted);
	ADD(calls_started);
	ADD(calls_revoked);
	ADD(calls_reaped);
	ADD(bans);
	ADD(banned_dropped);
	ADD(transactions_refused);
	ADD(transactions_evicted);
	ADD(responses_refused);
	ADD(failover_late_answers);
	ADD(inbound_failovers);
	ADD(byes_answered);
	ADD(byes_timed_out);
	ADD(bye_retransmissions);
	ADD(relay_refused);
	ADD(call_byes_refused);
	ADD(fleet_relayed);
	ADD(worker_handoffs);
	ADD(worker_sends);
	ADD_ALL(tcp_refused);
	ADD(tcp_idle_closed);
	ADD(next_hop_unreachable);
	ADD(tcp_reads_paused);
	ADD(tcp_write_queue_closed);
	ADD(accept_paused);
}

int sa_metrics_process_render(const struct sa_metrics_process *p, char **buf, size_t *len)
{
	int rc = 0;
	rc |= sa_metrics_appendf(buf, len, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
	                                   "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n",
	                         p->cpu_seconds);
	rc |= family(buf, len, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
	             p->resident_bytes);
	rc |= family(buf, len, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p->virtual_bytes);
	rc |= family(buf, len, "process_open_fds", "gauge", "Number of open file descriptors.", p->open_fds);
	rc |= family(buf, len, "process_max_fds", "gauge", "Maximum number of open file descriptors.", p->max_fds);
	rc |= sa_metrics_appendf(buf, len, "# HELP process_start_time_seconds Start time of the process since unix epoch "
	                                   "in seconds.\n# TYPE process_start_time_seconds gauge\n"
	                                   "process_start_time_seconds %.2f\n",
	                         p->start_time);
	return rc;
}
