/*
 * vecs.c: the float vectors of an index whose FAISS part does not keep them
 * (IVF and other compressed kinds), by id.
 *
 * They serve three purposes: re-ranking (candidates from compressed codes
 * are scored again with the exact vectors), keeping a replaced vector until
 * its replacement is in (FAISS cannot give one back from trained IVF lists),
 * and the copy an index is rebuilt from off the lock.
 *
 * A vecs is a read-only base, a file mapped into memory (written beside the
 * snapshot by vidx_save, so the kernel pages it in and out and the vectors
 * need not stay in the process's own memory), and an overlay in memory of
 * what changed since that file. `where` maps each live id to its row: >= 0
 * a row of the base, < 0 the overlay's row -(1 + r).
 *
 * File layout (host byte order, which the header's byte-order mark checks):
 *   "CLIPVECS" | u32 version | u32 dim | u64 n | u32 CRC-32 of the whole
 *   file with these four bytes as zeros | u32 byte-order mark 0x01020304
 *   | i64 ids[n] | zero padding to a multiple of 64 bytes | f32 rows[n][dim]
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "index_int.h"

#define VMAGIC "CLIPVECS"
#define VVERSION 1u
#define VHEADER 32
#define BOM 0x01020304u

struct vbase {
	int refs;
	void *map;
	size_t len;
	size_t n;
	const int64_t *ids;
	const float *rows;
};

static void base_unref(vbase *b)
{
	if (!b || --b->refs > 0)
		return;
	munmap(b->map, b->len);
	free(b);
}

void vecs_init(vecs *vs, int dim)
{
	memset(vs, 0, sizeof *vs);
	vs->dim = dim;
}

void vecs_free(vecs *vs)
{
	idset_free(&vs->where);
	base_unref(vs->base);
	free(vs->ov);
	free(vs->ov_id);
	vecs_init(vs, vs->dim);
}

size_t vecs_count(const vecs *vs)
{
	return vs->where.n;
}

const float *vecs_get(const vecs *vs, int64_t id)
{
	int64_t r;
	if (!idset_get(&vs->where, id, &r))
		return NULL;
	if (r >= 0)
		return vs->base->rows + (size_t)r * (size_t)vs->dim;
	return vs->ov + (size_t)(-1 - r) * (size_t)vs->dim;
}

/* Moves the live overlay rows to the front once half of them are dead. */
static void compact_overlay(vecs *vs)
{
	size_t d = (size_t)vs->dim, o = 0;
	for (size_t r = 0; r < vs->ov_n; r++) {
		if (vs->ov_id[r] < 0)
			continue;
		if (o != r) {
			memcpy(vs->ov + o * d, vs->ov + r * d, d * sizeof *vs->ov);
			vs->ov_id[o] = vs->ov_id[r];
			idset_put(&vs->where, vs->ov_id[o], -1 - (int64_t)o); /* key exists */
		}
		o++;
	}
	vs->ov_n = o;
	vs->ov_dead = 0;
}

/* Marks the overlay row of id (if it has one) dead. */
static void drop_row(vecs *vs, int64_t id)
{
	int64_t r;
	if (idset_get(&vs->where, id, &r) && r < 0) {
		vs->ov_id[-1 - r] = -1;
		vs->ov_dead++;
	}
}

int vecs_put(vecs *vs, int64_t id, const float *x)
{
	size_t d = (size_t)vs->dim;
	if (vs->ov_dead > 1024 && vs->ov_dead * 2 > vs->ov_n)
		compact_overlay(vs);
	if (vs->ov_n == vs->ov_cap) {
		size_t cap = vs->ov_cap ? vs->ov_cap * 2 : 256;
		float *p = realloc(vs->ov, cap * d * sizeof *p);
		if (!p)
			return -1;
		vs->ov = p;
		int64_t *q = realloc(vs->ov_id, cap * sizeof *q);
		if (!q)
			return -1;
		vs->ov_id = q;
		vs->ov_cap = cap;
	}
	int64_t r;
	int had = idset_get(&vs->where, id, &r);
	if (idset_put(&vs->where, id, -1 - (int64_t)vs->ov_n) != 0)
		return -1;
	if (had && r < 0) {
		vs->ov_id[-1 - r] = -1;
		vs->ov_dead++;
	}
	memcpy(vs->ov + vs->ov_n * d, x, d * sizeof *x);
	vs->ov_id[vs->ov_n++] = id;
	vs->changes++;
	return 0;
}

void vecs_del(vecs *vs, int64_t id)
{
	drop_row(vs, id);
	if (idset_del(&vs->where, id))
		vs->changes++;
}

int vecs_export(const vecs *vs, int64_t **ids, float **x, size_t *n, vidx_err *err)
{
	size_t d = (size_t)vs->dim, m = vs->where.n, o = 0;
	*ids = malloc((m ? m : 1) * sizeof **ids);
	*x = malloc((m ? m : 1) * d * sizeof **x);
	if (!*ids || !*x) {
		free(*ids), free(*x);
		*ids = NULL, *x = NULL;
		return vidx_fail(err, VIDX_ENOMEM, "out of memory copying %zu vectors", m);
	}
	for (size_t i = 0; i < vs->where.cap; i++) {
		int64_t id = vs->where.keys[i];
		if (id < 0)
			continue;
		memcpy(*x + o * d, vecs_get(vs, id), d * sizeof **x);
		(*ids)[o++] = id;
	}
	*n = o;
	return VIDX_OK;
}

/* ---- the file -------------------------------------------------------------- */

static size_t rows_offset(size_t n)
{
	return (VHEADER + n * 8 + 63) / 64 * 64;
}

static void put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static int write_full(int fd, const void *buf, size_t n, uLong *crc)
{
	const char *p = buf;
	size_t left = n;
	while (left > 0) {
		size_t chunk = left > (1u << 30) ? (1u << 30) : left;
		ssize_t w = write(fd, p, chunk);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		*crc = crc32(*crc, (const Bytef *)p, (uInt)w);
		p += w;
		left -= (size_t)w;
	}
	return 0;
}

int vecs_write(const vecs *vs, const char *path, uint32_t *crc_out, uint64_t *n_out,
               vidx_err *err)
{
	char tmp[PATH_MAX];
	size_t d = (size_t)vs->dim, n = vs->where.n;
	unsigned char h[VHEADER] = {0};
	int64_t *ids = NULL;
	int fd = -1, rc = VIDX_OK;
	uLong crc = crc32(0, NULL, 0);

	if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
		return vidx_fail(err, VIDX_EINVAL, "vector file path is too long");
	/* The ids in a fixed order, so the rows follow them. */
	if (!(ids = malloc((n ? n : 1) * sizeof *ids)))
		return vidx_fail(err, VIDX_ENOMEM, "out of memory");
	size_t o = 0;
	for (size_t i = 0; i < vs->where.cap; i++)
		if (vs->where.keys[i] >= 0)
			ids[o++] = vs->where.keys[i];
	memcpy(h, VMAGIC, 8);
	put32(h + 8, VVERSION);
	put32(h + 12, (uint32_t)d);
	uint64_t n64 = n;
	memcpy(h + 16, &n64, 8);
	put32(h + 28, BOM);

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = vidx_fail(err, VIDX_EIO, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	static const unsigned char zeros[64];
	size_t pad = rows_offset(n) - VHEADER - n * 8;
	if (write_full(fd, h, VHEADER, &crc) != 0 || write_full(fd, ids, n * 8, &crc) != 0 ||
	    write_full(fd, zeros, pad, &crc) != 0)
		goto io;
	/* Rows in batches through a buffer: the base is a mapping and the
	 * overlay scattered. */
	enum { BATCH = 1024 };
	float *buf = malloc(BATCH * d * sizeof *buf);
	if (!buf) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t at = 0; at < n; at += BATCH) {
		size_t m = n - at < BATCH ? n - at : BATCH;
		for (size_t i = 0; i < m; i++)
			memcpy(buf + i * d, vecs_get(vs, ids[at + i]), d * sizeof *buf);
		if (write_full(fd, buf, m * d * sizeof *buf, &crc) != 0) {
			free(buf);
			goto io;
		}
	}
	free(buf);
	put32(h + 24, (uint32_t)crc);
	if (pwrite(fd, h + 24, 4, 24) != 4 || fsync(fd) != 0)
		goto io;
	if (close(fd) != 0) {
		fd = -1;
		goto io;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto io;
	*crc_out = (uint32_t)crc;
	*n_out = n;
	goto out;
io:
	rc = vidx_fail(err, VIDX_EIO, "writing %s: %s", tmp, strerror(errno));
	unlink(tmp);
out:
	if (fd >= 0)
		close(fd);
	if (rc != VIDX_OK)
		unlink(tmp);
	free(ids);
	return rc;
}

int vecs_open_file(const char *path, int dim, uint32_t want_crc, uint64_t want_n, int check,
                   vecs *out, vidx_err *err)
{
	vecs_init(out, dim);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return vidx_fail(err, errno == ENOENT ? VIDX_ENOENT : VIDX_EIO,
		                 "cannot open vector file %s: %s", path, strerror(errno));
	struct stat st;
	size_t d = (size_t)dim;
	int rc = VIDX_OK;
	void *map = MAP_FAILED;
	if (fstat(fd, &st) != 0) {
		rc = vidx_fail(err, VIDX_EIO, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	if (want_n > ((uint64_t)SIZE_MAX - 64) / (8 + d * 4) ||
	    (uint64_t)st.st_size != rows_offset(want_n) + want_n * d * 4) {
		rc = vidx_fail(err, VIDX_ECORRUPT, "vector file %s is %lld bytes, not the %llu of %llu "
		               "vectors", path, (long long)st.st_size,
		               (unsigned long long)(rows_offset(want_n) + want_n * d * 4),
		               (unsigned long long)want_n);
		goto out;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		rc = vidx_fail(err, VIDX_EIO, "cannot map %s: %s", path, strerror(errno));
		goto out;
	}
	unsigned char h[VHEADER];
	memcpy(h, map, VHEADER);
	uint32_t ver, fdim, crc, bom;
	uint64_t n;
	memcpy(&ver, h + 8, 4), memcpy(&fdim, h + 12, 4), memcpy(&n, h + 16, 8);
	memcpy(&crc, h + 24, 4), memcpy(&bom, h + 28, 4);
	if (memcmp(h, VMAGIC, 8) != 0 || ver != VVERSION || bom != BOM || fdim != (uint32_t)dim ||
	    n != want_n || crc != want_crc) {
		rc = vidx_fail(err, VIDX_ECORRUPT, "vector file %s does not belong to this snapshot",
		               path);
		goto out;
	}
	/* The whole file, its CRC field as zeros: nothing is believed before. */
	memset(h + 24, 0, 4);
	uLong c = crc32(crc32(0, NULL, 0), h, VHEADER);
	const unsigned char *p = (const unsigned char *)map + VHEADER;
	size_t left = check ? (size_t)st.st_size - VHEADER : 0;
	if (!check)
		c = crc;
	while (left) {
		uInt chunk = left > (1u << 30) ? (1u << 30) : (uInt)left;
		c = crc32(c, p, chunk);
		p += chunk, left -= chunk;
	}
	if ((uint32_t)c != crc) {
		rc = vidx_fail(err, VIDX_ECORRUPT, "vector file %s is damaged (checksum mismatch)", path);
		goto out;
	}
	/* The checksum read every page: let them go from this process (they
	 * stay in the page cache while memory allows), so that its resident
	 * set holds only the rows re-ranking touches, not the whole file. */
	if (check)
		madvise(map, (size_t)st.st_size, MADV_DONTNEED);
	vbase *b = calloc(1, sizeof *b);
	if (!b) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		goto out;
	}
	*b = (vbase){1, map, (size_t)st.st_size, (size_t)n,
	             (const int64_t *)((char *)map + VHEADER),
	             (const float *)((char *)map + rows_offset(n))};
	map = MAP_FAILED;
	out->base = b;
	if (idset_reserve(&out->where, b->n) != 0)
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
	for (size_t r = 0; r < b->n && rc == VIDX_OK; r++) {
		if (b->ids[r] < 0 || idset_get(&out->where, b->ids[r], NULL)) {
			rc = vidx_fail(err, VIDX_ECORRUPT, "vector file %s holds a bad or repeated id", path);
			break;
		}
		if (idset_put(&out->where, b->ids[r], (int64_t)r) != 0) {
			rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
			break;
		}
	}
	/* The kernel reads rows as re-ranking touches them, not ahead. */
	madvise(b->map, b->len, MADV_RANDOM);
	if (rc != VIDX_OK)
		vecs_free(out);
out:
	if (map != MAP_FAILED)
		munmap(map, (size_t)st.st_size);
	close(fd);
	return rc;
}
