/*
 * bench/daemon.c: clipd as a child process on a loopback port. Its log
 * goes to a file, which is how we learn the port ("listening on
 * 127.0.0.1:PORT") and its own start-up time ("ready in N ms").
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server_int.h"

#define MAX_ARGS 64

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

/* Scans the log for the port and the start-up time. */
static void scan_log(bs_daemon *d)
{
	FILE *f = fopen(d->log_path, "r");
	char line[4096];
	while (f && fgets(line, sizeof line, f)) {
		const char *p;
		if (!d->port && (p = strstr(line, "listening on 127.0.0.1:")))
			d->port = atoi(p + strlen("listening on 127.0.0.1:"));
		if (d->ready_ms < 0 && (p = strstr(line, "ready in ")))
			d->ready_ms = atol(p + strlen("ready in "));
	}
	if (f)
		fclose(f);
}

static int ready(int port)
{
	char msg[256];
	bs_conn *c = bs_conn_open(port, msg, sizeof msg);
	int status = 0;
	const char *body;
	size_t len;
	if (c && bs_request(c, "GET", "/readyz", NULL, NULL, 0, &status, &body, &len, msg, sizeof msg))
		status = 0;
	bs_conn_close(c);
	return status == 200;
}

int bs_daemon_start(char *const argv[], const char *log_path, double timeout_s, bs_daemon *d,
                    char *msg, size_t msg_size)
{
	char *args[MAX_ARGS + 6];
	int n = 0;
	memset(d, 0, sizeof *d);
	d->pid = -1;
	d->ready_ms = -1;
	snprintf(d->log_path, sizeof d->log_path, "%s", log_path);
	while (argv[n] && n < MAX_ARGS) {
		args[n] = argv[n];
		n++;
	}
	args[n++] = "--listen";
	args[n++] = "127.0.0.1:0";
	args[n++] = "--log-level";
	args[n++] = "info";
	args[n] = NULL;

	/* Created here, not by the child: a scan must never read a log left by
	 * an earlier start. */
	int lfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (lfd < 0)
		return bs_fail(msg, msg_size, "cannot create %s: %s", log_path, strerror(errno));
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null < 0 || dup2(null, 0) < 0 || dup2(lfd, 1) < 0 || dup2(lfd, 2) < 0)
			_exit(126);
		/* Not left behind if the benchmark is killed; and not stopped by a
		 * terminal's Ctrl-C before the benchmark can stop it in order. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(125);
		setpgid(0, 0);
		execv(args[0], args);
		_exit(127);
	}
	close(lfd);
	if (pid < 0)
		return bs_fail(msg, msg_size, "fork: %s", strerror(errno));
	d->pid = pid;
	double deadline = bs_now() + timeout_s;
	while (!bs_interrupted) {
		int status;
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			d->pid = -1;
			return bs_fail(msg, msg_size, "clipd exited during start-up (%s %d): see %s",
			               WIFEXITED(status) ? "status" : "signal",
			               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), log_path);
		}
		if (!d->port || d->ready_ms < 0)
			scan_log(d);
		if (d->port && ready(d->port)) {
			/* "ready in" follows "listening on" at once. */
			for (int i = 0; i < 20 && d->ready_ms < 0; i++) {
				sleep_s(0.05);
				scan_log(d);
			}
			return 0;
		}
		if (bs_now() > deadline)
			return bs_fail(msg, msg_size, "clipd not ready after %.0f s: see %s", timeout_s,
			               log_path);
		sleep_s(0.05);
	}
	return bs_fail(msg, msg_size, "interrupted");
}

int bs_daemon_stop(bs_daemon *d, double timeout_s, char *msg, size_t msg_size)
{
	if (d->pid <= 0)
		return 0;
	kill(d->pid, SIGTERM);
	double deadline = bs_now() + timeout_s;
	int status = 0, killed = 0;
	for (;;) {
		pid_t w = waitpid(d->pid, &status, WNOHANG);
		if (w == d->pid)
			break;
		if (w < 0 && errno != EINTR)
			return bs_fail(msg, msg_size, "waitpid: %s", strerror(errno));
		if (!killed && bs_now() > deadline) {
			kill(d->pid, SIGKILL);
			killed = 1;
		}
		sleep_s(0.02);
	}
	d->pid = -1;
	if (killed)
		return bs_fail(msg, msg_size, "clipd did not stop within %.0f s after SIGTERM (killed)",
		               timeout_s);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return bs_fail(msg, msg_size, "clipd stopped with %s %d: see %s",
		               WIFEXITED(status) ? "status" : "signal",
		               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), d->log_path);
	return 0;
}

void bs_daemon_log_tail(const bs_daemon *d, int lines)
{
	FILE *f = fopen(d->log_path, "r");
	char **ring = calloc((size_t)lines, sizeof *ring);
	char buf[4096];
	long n = 0;
	while (f && ring && fgets(buf, sizeof buf, f)) {
		free(ring[n % lines]);
		ring[n % lines] = strdup(buf);
		n++;
	}
	for (long i = n > lines ? n - lines : 0; ring && i < n; i++)
		fprintf(stderr, "  clipd: %s", ring[i % lines] ? ring[i % lines] : "\n");
	for (int i = 0; ring && i < lines; i++)
		free(ring[i]);
	free(ring);
	if (f)
		fclose(f);
}
