/* blobs.c: content-addressed originals. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blobs.h"

#define NSTRIPES 256

struct blobs {
	char *dir;
	char *tmp;
	pthread_mutex_t stripe[NSTRIPES]; /* per first hash byte; see blobs.h */
};

struct blob_writer {
	blobs *b;
	char path[4096];      /* temporary file */
	int fd;
	GChecksum *sum;
	int64_t size;
	char sha[65];
	void *map;
	size_t map_len;
	int finished, committed;
};

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

static int mkdir_p1(const char *path)
{
	return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

static void clean_tmp(const char *tmp)
{
	DIR *d = opendir(tmp);
	struct dirent *e;
	char p[4096];
	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.') {
			snprintf(p, sizeof p, "%s/%s", tmp, e->d_name);
			unlink(p);
		}
	closedir(d);
}

int blobs_open(const char *dir, blobs **out, api_err *err)
{
	blobs *b = calloc(1, sizeof *b);
	char p[4096];
	int rc = 0;
	*out = NULL;
	if (!b || !(b->dir = strdup(dir)) || asprintf(&b->tmp, "%s/tmp", dir) < 0) {
		if (b)
			b->tmp = NULL;
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	if (mkdir_p1(dir) || mkdir_p1(b->tmp)) {
		rc = api_fail(err, API_EIO, "cannot create the blob directory %s: %s", dir, strerror(errno));
		goto out;
	}
	for (int i = 0; i < 256; i++) {
		snprintf(p, sizeof p, "%s/%02x", dir, i);
		if (mkdir_p1(p)) {
			rc = api_fail(err, API_EIO, "cannot create %s: %s", p, strerror(errno));
			goto out;
		}
	}
	if (fsync_dir(dir)) {
		rc = api_fail(err, API_EIO, "cannot fsync %s: %s", dir, strerror(errno));
		goto out;
	}
	clean_tmp(b->tmp);
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_init(&b->stripe[i], NULL);
	*out = b;
	b = NULL;
out:
	if (b) {
		free(b->dir);
		free(b->tmp);
		free(b);
	}
	return rc;
}

void blobs_close(blobs *b)
{
	if (!b)
		return;
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_destroy(&b->stripe[i]);
	free(b->dir);
	free(b->tmp);
	free(b);
}

void blobs_path(const blobs *b, const char *sha, char *buf, size_t size)
{
	snprintf(buf, size, "%s/%.2s/%s", b->dir, sha, sha);
}

static unsigned stripe_of(const char *sha)
{
	return (unsigned)g_ascii_xdigit_value(sha[0]) * 16u + (unsigned)g_ascii_xdigit_value(sha[1]);
}

void blobs_lock(blobs *b, const char *sha)
{
	pthread_mutex_lock(&b->stripe[stripe_of(sha) % NSTRIPES]);
}

void blobs_unlock(blobs *b, const char *sha)
{
	pthread_mutex_unlock(&b->stripe[stripe_of(sha) % NSTRIPES]);
}

int blobs_remove(blobs *b, const char *sha, api_err *err)
{
	char p[4096], d[4096];
	blobs_path(b, sha, p, sizeof p);
	if (unlink(p) != 0 && errno != ENOENT)
		return api_fail(err, API_EIO, "cannot remove blob %s: %s", sha, strerror(errno));
	snprintf(d, sizeof d, "%s/%.2s", b->dir, sha);
	fsync_dir(d);
	return 0;
}

int blob_writer_new(blobs *b, blob_writer **out, api_err *err)
{
	blob_writer *w = calloc(1, sizeof *w);
	*out = NULL;
	if (!w || !(w->sum = g_checksum_new(G_CHECKSUM_SHA256))) {
		free(w);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	w->b = b;
	snprintf(w->path, sizeof w->path, "%s/up-XXXXXX", b->tmp);
	w->fd = mkostemp(w->path, O_CLOEXEC);
	if (w->fd < 0) {
		int e = errno;
		g_checksum_free(w->sum);
		free(w);
		return api_fail(err, API_EIO, "cannot create a temporary file: %s", strerror(e));
	}
	*out = w;
	return 0;
}

int blob_writer_write(blob_writer *w, const void *data, size_t len, api_err *err)
{
	const char *p = data;
	g_checksum_update(w->sum, data, (gssize)len);
	w->size += (int64_t)len;
	while (len > 0) {
		ssize_t n = write(w->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return api_fail(err, API_EIO, "cannot write a temporary file: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int blob_writer_finish(blob_writer *w, api_err *err)
{
	if (w->finished)
		return 0;
	if (fsync(w->fd) != 0)
		return api_fail(err, API_EIO, "cannot fsync a temporary file: %s", strerror(errno));
	snprintf(w->sha, sizeof w->sha, "%s", g_checksum_get_string(w->sum));
	w->finished = 1;
	/* A finished file is only read (mapped) or renamed from here on: its
	 * descriptor is closed, so a request with many files holds one. */
	close(w->fd);
	w->fd = -1;
	return 0;
}

int64_t blob_writer_size(const blob_writer *w)
{
	return w->size;
}

const char *blob_writer_sha(const blob_writer *w)
{
	return w->sha;
}

int blob_writer_data(blob_writer *w, const uint8_t **data, size_t *len, api_err *err)
{
	*data = NULL;
	*len = 0;
	if (w->size == 0)
		return 0;
	if (!w->map) {
		int fd = w->fd >= 0 ? w->fd : open(w->path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return api_fail(err, API_EIO, "cannot open a temporary file: %s", strerror(errno));
		void *m = mmap(NULL, (size_t)w->size, PROT_READ, MAP_PRIVATE, fd, 0);
		int e = errno;
		if (fd != w->fd)
			close(fd);
		if (m == MAP_FAILED)
			return api_fail(err, API_EIO, "cannot map a temporary file: %s", strerror(e));
		w->map = m;
		w->map_len = (size_t)w->size;
	}
	*data = w->map;
	*len = w->map_len;
	return 0;
}

static void unmap(blob_writer *w)
{
	if (w->map)
		munmap(w->map, w->map_len);
	w->map = NULL;
}

int blob_writer_commit(blob_writer *w, api_err *err)
{
	char dst[4096], dir[4096];
	if (!w->finished && blob_writer_finish(w, err))
		return -1;
	unmap(w);
	blobs_path(w->b, w->sha, dst, sizeof dst);
	if (rename(w->path, dst) != 0)
		return api_fail(err, API_EIO, "cannot move a blob into place: %s", strerror(errno));
	w->committed = 1;
	snprintf(dir, sizeof dir, "%s/%.2s", w->b->dir, w->sha);
	if (fsync_dir(dir) != 0)
		return api_fail(err, API_EIO, "cannot fsync the blob directory: %s", strerror(errno));
	return 0;
}

void blob_writer_free(blob_writer *w)
{
	if (!w)
		return;
	unmap(w);
	if (w->fd >= 0)
		close(w->fd);
	if (!w->committed)
		unlink(w->path);
	g_checksum_free(w->sum);
	free(w);
}
