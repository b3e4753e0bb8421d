/* bench/util.c: clock, signals, temporary directories, child processes, paths. */
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server_int.h"
#include "timing.h"

/* Written by the signal handler, read by the loops: see bs_catch_signals. */
volatile sig_atomic_t bs_interrupted;

double bs_now(void)
{
	return bench_now();
}

int bs_fail(char *msg, size_t msg_size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, msg_size, fmt, ap);
	va_end(ap);
	return -1;
}

static void on_signal(int sig)
{
	(void)sig;
	bs_interrupted = 1;
}

void bs_catch_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a sleep or a poll returns at once and the loop sees
	 * the flag. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

char *bs_mkdtemp(const char *parent, char *msg, size_t msg_size)
{
	char *path;
	if (asprintf(&path, "%s/clipd-bench-XXXXXX", parent) < 0) {
		bs_fail(msg, msg_size, "out of memory");
		return NULL;
	}
	if (!mkdtemp(path)) {
		bs_fail(msg, msg_size, "cannot create a directory under %s: %s", parent, strerror(errno));
		free(path);
		return NULL;
	}
	return path;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

int bs_rmtree(const char *path)
{
	if (!path)
		return 0;
	return nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
}

int bs_run(char *const argv[], const char *log_path, char *msg, size_t msg_size)
{
	pid_t pid = fork();
	if (pid < 0)
		return bs_fail(msg, msg_size, "fork: %s", strerror(errno));
	if (pid == 0) {
		if (log_path) {
			int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
				_exit(126);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return bs_fail(msg, msg_size, "waitpid: %s", strerror(errno));
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return bs_fail(msg, msg_size, "cannot run %s", argv[0]);
	return bs_fail(msg, msg_size, "%s failed (%s %d)%s%s", argv[0],
	               WIFEXITED(status) ? "status" : "signal",
	               WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
	               log_path ? ": see " : "", log_path ? log_path : "");
}

void bs_build_dir(char *out, size_t size)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	snprintf(out, size, ".");
	if (n <= 0)
		return;
	exe[n] = '\0';
	for (int k = 0; k < 2; k++) {
		char *slash = strrchr(exe, '/');
		if (!slash)
			return;
		*slash = '\0';
	}
	snprintf(out, size, "%s", exe);
}
