/*
 * snapshot.c: saving and loading the index.
 *
 * File layout (little-endian):
 *   header  "CLIPVIDX" | u32 version | u32 dim | u32 kind | u32 reserved
 *           | u64 seq | u64 payload bytes | u32 CRC-32 of the whole file
 *           (taken with these four bytes as zeros)
 *           | u16 length + model id | u16 length + factory string
 *   payload u8 has_main, [FAISS index] | u8 has_pending, [FAISS index]
 *           | u64 nslots, i64 slot ids[nslots] (HNSW only)
 *           | u32 CRC-32 and u64 count of the vector file (IVF and other
 *             kinds: version 2)
 *
 * The vector file (vecs.c) is PATH.vec, written and renamed before the
 * snapshot; the snapshot names its CRC, so a snapshot and a vector file of
 * different saves (a crash between the two renames) do not load together,
 * and the index is rebuilt from the store instead.
 *
 * The payload is written once, through a stdio stream that feeds the CRC as
 * FAISS writes (fopencookie), then the header is filled in. Loading checks
 * the header, the file size and the CRC before FAISS parses anything, so a
 * torn or damaged file is refused with a message instead of being parsed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <faiss/c_api/index_io_c.h>

#include "index_int.h"

#define MAGIC "CLIPVIDX"
#define VERSION 2u
#define FIXED_HEADER 48 /* through the CRC */
#define MAX_NAME 1024    /* model id and factory string */

struct crc_sink {
	int fd;
	uLong crc;
	uint64_t bytes;
	int error;   /* errno of a failed write */
};

static ssize_t sink_write(void *cookie, const char *buf, size_t size)
{
	struct crc_sink *s = cookie;
	size_t done = 0;
	while (done < size) {
		ssize_t w = write(s->fd, buf + done, size - done);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			s->error = errno;
			return -1;
		}
		done += (size_t)w;
	}
	s->crc = crc32(s->crc, (const Bytef *)buf, (uInt)size);
	s->bytes += size;
	return (ssize_t)size;
}

static void put_u16(unsigned char *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

static void put_u32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static void put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (v >> (8 * i)) & 0xff;
}

static uint16_t get_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get_u32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int write_payload(vidx *v, FILE *f, uint32_t vcrc, uint64_t vn, vidx_err *err)
{
	unsigned char b8[8];
	FaissIndex *parts[2] = {v->main, v->pending};
	for (int i = 0; i < 2; i++) {
		if (fputc(parts[i] != NULL, f) == EOF)
			return vidx_fail(err, VIDX_EIO, "writing the snapshot: %s", strerror(errno));
		if (parts[i] && faiss_write_index(parts[i], f) != 0)
			return vidx_faiss_fail(err, "writing the snapshot");
	}
	if (v->kind == VIDX_HNSW) {
		put_u64(b8, v->nslots);
		if (fwrite(b8, 8, 1, f) != 1)
			return vidx_fail(err, VIDX_EIO, "writing the snapshot: %s", strerror(errno));
		for (size_t i = 0; i < v->nslots; i++) {
			put_u64(b8, (uint64_t)v->slot_id[i]);
			if (fwrite(b8, 8, 1, f) != 1)
				return vidx_fail(err, VIDX_EIO, "writing the snapshot: %s", strerror(errno));
		}
	}
	if (v->has_vecs) {
		unsigned char b4[4];
		put_u32(b4, vcrc);
		put_u64(b8, vn);
		if (fwrite(b4, 4, 1, f) != 1 || fwrite(b8, 8, 1, f) != 1)
			return vidx_fail(err, VIDX_EIO, "writing the snapshot: %s", strerror(errno));
	}
	return VIDX_OK;
}

static void vec_path(const char *path, char *out, size_t size)
{
	snprintf(out, size, "%s.vec", path);
}

static int write_all_at(int fd, const void *buf, size_t n, off_t at)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, at);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
		at += w;
	}
	return 0;
}

static int fsync_dir_of(const char *path)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = 0;
	else if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof dir, ".");
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/* After a save: the vectors just written become the mapped base, and the
 * overlay's memory goes, unless something changed since they were written
 * (then the next save tries again). The file is mapped and its ids indexed
 * outside the lock; only the exchange takes it. */
static void adopt_vecs(vidx *v, const char *vpath, uint32_t vcrc, uint64_t vn, uint64_t changes)
{
	vecs nv;
	vidx_err e;
	if (vecs_open_file(vpath, v->dim, vcrc, vn, 0, &nv, &e) != VIDX_OK)
		return;
	pthread_rwlock_wrlock(&v->lock);
	if (v->vecs.changes == changes) {
		vecs old = v->vecs;
		nv.changes = changes;
		v->vecs = nv;
		nv = old;
	}
	pthread_rwlock_unlock(&v->lock);
	vecs_free(&nv);
}

int vidx_save(vidx *v, const char *path, vidx_err *err)
{
	char tmp[PATH_MAX];
	unsigned char hdr[FIXED_HEADER + 4 + 2 * MAX_NAME];
	size_t mlen = strlen(v->model), flen;
	char fname[MAX_NAME + 8];
	int fd = -1, rc = VIDX_OK;
	FILE *f = NULL;
	struct crc_sink sink = {.crc = crc32(0, NULL, 0)};

	if (!path || snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
		return vidx_fail(err, VIDX_EINVAL, "snapshot path is too long");
	if (mlen > MAX_NAME)
		return vidx_fail(err, VIDX_EINVAL, "model id is too long");
	char vpath[PATH_MAX];
	uint32_t vcrc = 0;
	uint64_t vn = 0, vchanges = 0;
	vec_path(path, vpath, sizeof vpath);

	pthread_rwlock_rdlock(&v->lock);
	/* An auto index records that it is one: "auto:" before its factory. */
	snprintf(fname, sizeof fname, "%s%s", v->auto_mode ? "auto:" : "", v->factory);
	flen = strlen(fname);
	size_t hlen = FIXED_HEADER + 2 + mlen + 2 + flen;
	if (flen > MAX_NAME) {
		rc = vidx_fail(err, VIDX_EINVAL, "factory string is too long");
		goto out;
	}
	vchanges = v->vecs.changes;
	if (v->has_vecs && (rc = vecs_write(&v->vecs, vpath, &vcrc, &vn, err)) != VIDX_OK)
		goto out;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = vidx_fail(err, VIDX_EIO, "cannot create snapshot %s: %s", tmp, strerror(errno));
		goto out;
	}
	sink.fd = fd;
	if (lseek(fd, (off_t)hlen, SEEK_SET) < 0) {
		rc = vidx_fail(err, VIDX_EIO, "writing snapshot: %s", strerror(errno));
		goto out;
	}
	cookie_io_functions_t io = {.write = sink_write};
	if (!(f = fopencookie(&sink, "w", io))) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		goto out;
	}
	rc = write_payload(v, f, vcrc, vn, err);
	if (fclose(f) != 0 && rc == VIDX_OK)
		rc = vidx_fail(err, VIDX_EIO, "writing snapshot: %s", strerror(sink.error ? sink.error : errno));
	f = NULL;
	if (rc != VIDX_OK)
		goto out;

	memset(hdr, 0, sizeof hdr);
	memcpy(hdr, MAGIC, 8);
	put_u32(hdr + 8, VERSION);
	put_u32(hdr + 12, (uint32_t)v->dim);
	put_u32(hdr + 16, (uint32_t)v->kind);
	put_u64(hdr + 24, v->seq);
	put_u64(hdr + 32, sink.bytes);
	/* bytes 40..43 stay zero while the header's own CRC is taken */
	put_u16(hdr + FIXED_HEADER, (uint16_t)mlen);
	memcpy(hdr + FIXED_HEADER + 2, v->model, mlen);
	put_u16(hdr + FIXED_HEADER + 2 + mlen, (uint16_t)flen);
	memcpy(hdr + FIXED_HEADER + 4 + mlen, fname, flen);
	uLong hcrc = crc32(crc32(0, NULL, 0), hdr, (uInt)hlen);
	put_u32(hdr + 40, (uint32_t)crc32_combine(hcrc, sink.crc, (z_off_t)sink.bytes));
	if (write_all_at(fd, hdr, hlen, 0) != 0 || fsync(fd) != 0) {
		rc = vidx_fail(err, VIDX_EIO, "writing snapshot: %s", strerror(errno));
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = vidx_fail(err, VIDX_EIO, "writing snapshot: %s", strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = vidx_fail(err, VIDX_EIO, "cannot replace snapshot %s: %s", path, strerror(errno));
		goto out;
	}
	/* The rename is durable only once the directory is. */
	if (fsync_dir_of(path) != 0)
		rc = vidx_fail(err, VIDX_EIO, "syncing the snapshot's directory: %s", strerror(errno));
out:
	pthread_rwlock_unlock(&v->lock);
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	if (rc != VIDX_OK)
		unlink(tmp);
	if (rc == VIDX_OK && v->has_vecs)
		adopt_vecs(v, vpath, vcrc, vn, vchanges);
	return rc;
}

/* Reads exactly n bytes at the current offset. */
static int read_full(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n > 0) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Continues CRC-32 c over plen bytes from fd's offset and compares the
 * result with crc. */
static int check_crc(int fd, uLong c, uint64_t plen, uint32_t crc, const char *path, vidx_err *err)
{
	size_t cap = 1 << 20;
	unsigned char *buf = malloc(cap);
	int rc = VIDX_OK;
	if (!buf)
		return vidx_fail(err, VIDX_ENOMEM, "out of memory");
	for (uint64_t left = plen; left > 0;) {
		size_t n = left < cap ? (size_t)left : cap;
		if (read_full(fd, buf, n) != 0) {
			rc = vidx_fail(err, VIDX_EIO, "cannot read snapshot %s", path);
			break;
		}
		c = crc32(c, buf, (uInt)n);
		left -= n;
	}
	free(buf);
	if (rc == VIDX_OK && (uint32_t)c != crc)
		rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s is damaged (checksum mismatch)", path);
	return rc;
}

static int read_index_part(FILE *f, FaissIndex **out, vidx_err *err)
{
	int has = fgetc(f);
	*out = NULL;
	if (has == EOF)
		return vidx_fail(err, VIDX_ECORRUPT, "snapshot payload ends early");
	if (has == 0)
		return VIDX_OK;
	if (has != 1)
		return vidx_fail(err, VIDX_ECORRUPT, "snapshot payload is malformed");
	if (faiss_read_index(f, 0, out) != 0) {
		vidx_faiss_fail(err, "reading the snapshot");
		err->code = VIDX_ECORRUPT;
		return VIDX_ECORRUPT;
	}
	return VIDX_OK;
}

int vidx_load(const char *path, const char *model, int dim, vidx **out, vidx_err *err)
{
	vidx_err local;
	unsigned char fixed[FIXED_HEADER + 2], b8[8];
	char smodel[MAX_NAME + 1], sfactory[MAX_NAME + 1];
	FaissIndex *main = NULL, *pending = NULL;
	FILE *f = NULL;
	vidx *v = NULL;
	int rc;

	if (!err)
		err = &local;
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vidx_fail(err, errno == ENOENT ? VIDX_ENOENT : VIDX_EIO,
		                 "cannot open snapshot %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		rc = vidx_fail(err, VIDX_EIO, "cannot read snapshot %s: %s", path, strerror(errno));
		goto out;
	}
	if (read_full(fd, fixed, sizeof fixed) != 0 || memcmp(fixed, MAGIC, 8) != 0) {
		rc = vidx_fail(err, VIDX_ECORRUPT, "%s is not an index snapshot", path);
		goto out;
	}
	uint32_t version = get_u32(fixed + 8);
	if (version != VERSION && version != 1) {
		rc = vidx_fail(err, VIDX_EFORMAT, "snapshot %s has format version %u, this build reads %u",
		               path, get_u32(fixed + 8), VERSION);
		goto out;
	}
	uint32_t sdim = get_u32(fixed + 12), kind = get_u32(fixed + 16);
	uint64_t seq = get_u64(fixed + 24), plen = get_u64(fixed + 32);
	uint32_t crc = get_u32(fixed + 40);
	uint16_t mlen = get_u16(fixed + FIXED_HEADER), flen;
	if (mlen > MAX_NAME || read_full(fd, smodel, mlen) != 0 || read_full(fd, b8, 2) != 0 ||
	    (flen = get_u16(b8)) > MAX_NAME || read_full(fd, sfactory, flen) != 0 ||
	    kind > VIDX_OTHER) {
		rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s has a damaged header", path);
		goto out;
	}
	smodel[mlen] = 0;
	sfactory[flen] = 0;
	uint64_t hlen = FIXED_HEADER + 2 + (uint64_t)mlen + 2 + flen;
	if ((uint64_t)st.st_size != hlen + plen) {
		rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s is %s (%lld bytes, header says %llu)",
		               path, (uint64_t)st.st_size < hlen + plen ? "truncated" : "too long",
		               (long long)st.st_size, (unsigned long long)(hlen + plen));
		goto out;
	}
	/* The CRC covers the header (with its own field as zeros) and the
	 * payload: nothing is believed before it matches. */
	memset(fixed + 40, 0, 4);
	uLong c = crc32(crc32(0, NULL, 0), fixed, sizeof fixed);
	c = crc32(c, (const Bytef *)smodel, mlen);
	c = crc32(c, b8, 2);
	c = crc32(c, (const Bytef *)sfactory, flen);
	if ((rc = check_crc(fd, c, plen, crc, path, err)) != VIDX_OK)
		goto out;
	if (model && strcmp(model, smodel) != 0) {
		rc = vidx_fail(err, VIDX_EMISMATCH, "snapshot %s was built for model \"%s\", not \"%s\"",
		               path, smodel, model);
		goto out;
	}
	if ((int)sdim != dim) {
		rc = vidx_fail(err, VIDX_EMISMATCH,
		               "snapshot %s holds %u-dimensional vectors, the model gives %d", path, sdim,
		               dim);
		goto out;
	}
	if (lseek(fd, (off_t)hlen, SEEK_SET) < 0 || !(f = fdopen(fd, "rb"))) {
		rc = vidx_fail(err, VIDX_EIO, "cannot read snapshot %s: %s", path, strerror(errno));
		goto out;
	}
	fd = -1; /* f owns it now */
	if ((rc = read_index_part(f, &main, err)) != VIDX_OK ||
	    (rc = read_index_part(f, &pending, err)) != VIDX_OK)
		goto out;
	if (!main || faiss_Index_d(main) != dim || (pending && faiss_Index_d(pending) != dim)) {
		rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s does not match its header", path);
		goto out;
	}
	int is_auto = strncmp(sfactory, "auto:", 5) == 0;
	rc = vidx_wrap(dim, (vidx_kind)kind, smodel, sfactory + (is_auto ? 5 : 0), main, pending, &v,
	               err);
	main = pending = NULL;
	if (rc != VIDX_OK)
		goto out;
	if (is_auto)
		vidx_make_auto(v);
	v->seq = seq;
	if (v->kind == VIDX_HNSW) {
		if (fread(b8, 8, 1, f) != 1) {
			rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s ends early", path);
			goto out;
		}
		v->nslots = v->slots_cap = get_u64(b8);
		if (v->nslots != (size_t)faiss_Index_ntotal(v->main)) {
			rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s does not match its header", path);
			goto out;
		}
		v->slot_id = malloc((v->nslots ? v->nslots : 1) * sizeof *v->slot_id);
		if (!v->slot_id) {
			rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
			goto out;
		}
		for (size_t i = 0; i < v->nslots; i++) {
			if (fread(b8, 8, 1, f) != 1) {
				rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s ends early", path);
				goto out;
			}
			v->slot_id[i] = (int64_t)get_u64(b8);
		}
	}
	if (v->has_vecs) {
		char vpath[PATH_MAX];
		unsigned char b4[4];
		if (version < 2) {
			rc = vidx_fail(err, VIDX_EFORMAT, "snapshot %s is of format 1, which kept no "
			               "vectors for re-ranking", path);
			goto out;
		}
		if (fread(b4, 4, 1, f) != 1 || fread(b8, 8, 1, f) != 1) {
			rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s ends early", path);
			goto out;
		}
		vec_path(path, vpath, sizeof vpath);
		if ((rc = vecs_open_file(vpath, dim, get_u32(b4), get_u64(b8), 1, &v->vecs, err)) !=
		    VIDX_OK) {
			if (rc == VIDX_ENOENT)
				rc = VIDX_ECORRUPT;
			goto out;
		}
	}
	if ((rc = vidx_index_ids(v, err)) != VIDX_OK)
		goto out;
	if (v->kind == VIDX_IVF && !v->pending)
		v->trained_n = v->ids.n;
	if (v->has_vecs && vecs_count(&v->vecs) != v->ids.n) {
		rc = vidx_fail(err, VIDX_ECORRUPT, "snapshot %s holds %zu vectors, its vector file %zu",
		               path, v->ids.n, vecs_count(&v->vecs));
		goto out;
	}
	*out = v;
	v = NULL;
out:
	vidx_close(v);
	faiss_Index_free(main);
	faiss_Index_free(pending);
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	return rc;
}
