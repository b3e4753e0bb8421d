/*
 * bench/soak_proc.c: what /proc says about the daemon. RSS is VmRSS of
 * /proc/PID/status (resident anonymous, file and shared memory: the
 * mapped weights count once paged in), anon its RssAnon (what a leak
 * grows), descriptors are the entries of
 * /proc/PID/fd, threads the Threads line.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "soak_int.h"

int soak_proc_read(pid_t pid, soak_proc *out)
{
	char path[64], line[256];
	out->rss_kb = out->anon_kb = -1;
	out->fds = -1;
	out->threads = -1;
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, "VmRSS:", 6))
			out->rss_kb = atol(line + 6);
		else if (!strncmp(line, "RssAnon:", 8))
			out->anon_kb = atol(line + 8);
		else if (!strncmp(line, "Threads:", 8))
			out->threads = atoi(line + 8);
	}
	fclose(f);
	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	out->fds = n;
	/* A zombie has a status but no memory: it is gone. */
	return out->rss_kb >= 0 ? 0 : -1;
}

/* The inode of the socket listening on 127.0.0.1:port (or 0.0.0.0:port),
 * 0 if none. */
static unsigned long listen_inode(int port)
{
	FILE *f = fopen("/proc/net/tcp", "r");
	char line[512];
	unsigned long found = 0;
	if (!f)
		return 0;
	if (!fgets(line, sizeof line, f)) { /* the header */
		fclose(f);
		return 0;
	}
	while (!found && fgets(line, sizeof line, f)) {
		unsigned addr, lport, raddr, rport, state;
		unsigned long inode;
		int slot;
		/* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
		if (sscanf(line, " %d: %8X:%4X %8X:%4X %2X %*s %*s %*s %*s %*s %lu", &slot, &addr,
		           &lport, &raddr, &rport, &state, &inode) != 7)
			continue;
		/* 0x0A is LISTEN; the address is in network order read as a
		 * little-endian word on x86: 127.0.0.1 is 0100007F. */
		if (state == 0x0A && (int)lport == port && (addr == 0x0100007F || addr == 0))
			found = inode;
	}
	fclose(f);
	return found;
}

pid_t soak_proc_listener(int port)
{
	unsigned long inode = listen_inode(port);
	char want[64], path[300], link[128];
	pid_t found = -1;
	if (!inode)
		return -1;
	snprintf(want, sizeof want, "socket:[%lu]", inode);
	DIR *proc = opendir("/proc");
	struct dirent *p;
	while (proc && found < 0 && (p = readdir(proc))) {
		if (p->d_name[0] < '1' || p->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/%s/fd", p->d_name);
		DIR *fd = opendir(path);
		struct dirent *e;
		while (fd && found < 0 && (e = readdir(fd))) {
			if (e->d_name[0] == '.')
				continue;
			char fpath[600];
			snprintf(fpath, sizeof fpath, "%s/%s", path, e->d_name);
			ssize_t n = readlink(fpath, link, sizeof link - 1);
			if (n <= 0)
				continue;
			link[n] = '\0';
			if (!strcmp(link, want))
				found = (pid_t)atoi(p->d_name);
		}
		if (fd)
			closedir(fd);
	}
	if (proc)
		closedir(proc);
	return found;
}
