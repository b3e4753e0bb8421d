/*
 * bench/load.c: closed-loop load. Each client thread owns one keep-alive
 * connection and sends its next request as soon as the last one was
 * answered, so the offered load is exactly `clients` requests in flight.
 *
 * DESIGN: threads. The caller's thread starts the clients, which wait on a
 * barrier so that they all begin together, and joins them. Each client
 * writes only its own struct client (latencies, counts); the caller reads
 * them after the join. The window is fixed before the barrier: a request
 * that is answered after the deadline is not counted, and no new request
 * starts after it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"
#include "timing.h"

struct client {
	pthread_t th;
	int id, port;
	const char *path;
	const char *const *bodies;
	int nbodies;
	double deadline;
	pthread_barrier_t *start;
	double *lat;          /* seconds, [n] */
	size_t n, cap;
	long errors;
	double last_end;
	char first_error[256];
};

static void note_error(struct client *cl, const char *fmt, const char *detail)
{
	if (cl->errors++ == 0)
		snprintf(cl->first_error, sizeof cl->first_error, fmt, detail);
}

static void *client_main(void *p)
{
	struct client *cl = p;
	char msg[256];
	bs_conn *c = bs_conn_open(cl->port, msg, sizeof msg);
	pthread_barrier_wait(cl->start);
	if (!c) {
		note_error(cl, "%s", msg);
		return NULL;
	}
	for (long i = cl->id; !bs_interrupted; i++) {
		const char *body = cl->bodies[i % cl->nbodies];
		int status;
		const char *resp;
		size_t rlen;
		double t0 = bs_now();
		if (t0 >= cl->deadline)
			break;
		int rc = bs_request(c, "POST", cl->path, "application/json", body, strlen(body), &status,
		                    &resp, &rlen, msg, sizeof msg);
		double t1 = bs_now();
		if (t1 > cl->deadline)
			break;
		cl->last_end = t1;
		if (rc) {
			note_error(cl, "%s", msg);
			continue;
		}
		if (status != 200) {
			char what[256];
			snprintf(what, sizeof what, "HTTP %d: %.200s", status, resp);
			note_error(cl, "%s", what);
			continue;
		}
		if (cl->n == cl->cap) {
			size_t nc = cl->cap ? cl->cap * 2 : 1024;
			double *l = realloc(cl->lat, nc * sizeof *l);
			if (!l) {
				note_error(cl, "%s", "out of memory");
				break;
			}
			cl->lat = l;
			cl->cap = nc;
		}
		cl->lat[cl->n++] = t1 - t0;
	}
	bs_conn_close(c);
	return NULL;
}

/* The q-quantile of sorted x[n] (nearest rank). */
static double quantile(const double *x, size_t n, double q)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(q * (double)n + 0.5);
	if (i > 0)
		i--;
	return x[i < n ? i : n - 1];
}

int bs_load_run(int port, const char *path, int clients, double seconds,
                const char *const *bodies, int nbodies, bs_load_result *out, char *msg,
                size_t msg_size)
{
	struct client *cl = calloc((size_t)clients, sizeof *cl);
	pthread_barrier_t start;
	double *all = NULL;
	int started = 0, rc = 0;
	memset(out, 0, sizeof *out);
	out->clients = clients;
	if (!cl)
		return bs_fail(msg, msg_size, "out of memory");
	pthread_barrier_init(&start, NULL, (unsigned)clients + 1);
	/* Clients connect, then wait on the barrier; they read their deadline
	 * only after it, so writing it just before our own wait is ordered. */
	double t_start = 0;
	for (int i = 0; i < clients; i++) {
		cl[i] = (struct client){.id = i, .port = port, .path = path, .bodies = bodies,
		                        .nbodies = nbodies, .start = &start, .deadline = 1e300};
	}
	for (int i = 0; i < clients; i++) {
		if (pthread_create(&cl[i].th, NULL, client_main, &cl[i]) != 0) {
			rc = bs_fail(msg, msg_size, "cannot start client thread %d", i);
			break;
		}
		started++;
	}
	if (started < clients) {
		/* The barrier can never open: release the ones waiting by stopping
		 * them at once. */
		for (int i = 0; i < started; i++)
			cl[i].deadline = 0;
		for (int i = started; i < clients; i++)
			pthread_barrier_wait(&start); /* stand in for the missing ones */
	} else {
		t_start = bs_now();
		for (int i = 0; i < clients; i++)
			cl[i].deadline = t_start + seconds;
	}
	pthread_barrier_wait(&start);
	for (int i = 0; i < started; i++)
		pthread_join(cl[i].th, NULL);
	pthread_barrier_destroy(&start);
	if (rc)
		goto out;

	size_t n = 0;
	double end = t_start;
	for (int i = 0; i < clients; i++) {
		n += cl[i].n;
		out->errors += cl[i].errors;
		if (cl[i].errors && !out->first_error[0])
			snprintf(out->first_error, sizeof out->first_error, "%s", cl[i].first_error);
		end = cl[i].last_end > end ? cl[i].last_end : end;
	}
	if (!(all = malloc((n ? n : 1) * sizeof *all))) {
		rc = bs_fail(msg, msg_size, "out of memory");
		goto out;
	}
	n = 0;
	for (int i = 0; i < clients; i++) {
		memcpy(all + n, cl[i].lat, cl[i].n * sizeof *all);
		n += cl[i].n;
	}
	qsort(all, n, sizeof *all, bench_cmp_double);
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += all[i];
	out->mean_ms = n ? sum / (double)n * 1e3 : 0;
	out->requests = (long)n;
	out->seconds = end - t_start;
	out->qps = out->seconds > 0 ? (double)n / out->seconds : 0;
	out->p50_ms = quantile(all, n, 0.50) * 1e3;
	out->p90_ms = quantile(all, n, 0.90) * 1e3;
	out->p99_ms = quantile(all, n, 0.99) * 1e3;
	out->max_ms = n ? all[n - 1] * 1e3 : 0;
out:
	for (int i = 0; i < clients; i++)
		free(cl[i].lat);
	free(cl);
	free(all);
	return rc;
}
