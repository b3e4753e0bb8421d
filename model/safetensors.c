/*
 * safetensors.c: reading the safetensors format.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *  "__metadata__": {...}}, then the data; offsets are relative to the start
 * of the data. The file is mapped read-only and never trusted: every offset,
 * size and shape is checked before a pointer into it is handed out.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clip_int.h"
#include "safetensors_int.h"

#define MAX_HEADER (100u << 20)

static int dtype_of(const char *s, st_dtype *d, size_t *size)
{
	if (strcmp(s, "F32") == 0) {
		*d = ST_F32;
		*size = 4;
	} else if (strcmp(s, "F16") == 0) {
		*d = ST_F16;
		*size = 2;
	} else if (strcmp(s, "BF16") == 0) {
		*d = ST_BF16;
		*size = 2;
	} else {
		static const struct { const char *n; size_t s; } other[] = {
			{"F64", 8}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},
			{"U8", 1}, {"BOOL", 1}, {"U16", 2}, {"U32", 4}, {"U64", 8},
		};
		*d = ST_OTHER;
		for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
			if (strcmp(s, other[i].n) == 0) {
				*size = other[i].s;
				return 0;
			}
		return -1;
	}
	return 0;
}

void st_close(st_file *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->ntensors; i++)
		free(f->tensors[i].name);
	free(f->tensors);
	if (f->map)
		munmap(f->map, f->map_size);
	memset(f, 0, sizeof *f);
}

void st_drop_range(const void *p, size_t n)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t b = ((uintptr_t)p + page - 1) & ~(page - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(page - 1);
	if (e > b)
		madvise((void *)b, e - b, MADV_DONTNEED);
}

void st_drop(const st_tensor *t)
{
	st_drop_range(t->data, t->nbytes);
}

int64_t st_numel(const st_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
	for (size_t i = 0; i < f->ntensors; i++)
		if (strcmp(f->tensors[i].name, name) == 0)
			return &f->tensors[i];
	return NULL;
}

static int parse_tensor(const char *name, json_t *v, const unsigned char *data, size_t data_len,
                        st_tensor *t, clip_err *err)
{
	json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape");
	json_t *offs = json_object_get(v, "data_offsets");
	size_t esize;

	memset(t, 0, sizeof *t);
	if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs) ||
	    json_array_size(offs) != 2)
		return clip_fail(err, CLIP_EMODEL, "safetensors: tensor %s has a malformed entry", name);
	if (dtype_of(json_string_value(dt), &t->dtype, &esize) != 0)
		return clip_fail(err, CLIP_EMODEL, "safetensors: tensor %s has unknown dtype %.8s", name,
		                 json_string_value(dt));
	snprintf(t->dtype_name, sizeof t->dtype_name, "%s", json_string_value(dt));
	if (json_array_size(shape) > ST_MAX_DIMS)
		return clip_fail(err, CLIP_EMODEL, "safetensors: tensor %s has too many dimensions", name);
	t->ndim = (int)json_array_size(shape);
	uint64_t numel = 1;
	for (int i = 0; i < t->ndim; i++) {
		json_t *d = json_array_get(shape, (size_t)i);
		if (!json_is_integer(d) || json_integer_value(d) < 0 ||
		    json_integer_value(d) > (1LL << 40))
			return clip_fail(err, CLIP_EMODEL, "safetensors: tensor %s has a bad shape", name);
		t->shape[i] = json_integer_value(d);
		/* Checked before multiplying: [2^40, 2^24] would wrap to 0
		 * elements and pass as an empty tensor. */
		if (t->shape[i] != 0 && numel > (1ULL << 40) / (uint64_t)t->shape[i])
			return clip_fail(err, CLIP_EMODEL, "safetensors: tensor %s is too large", name);
		numel *= (uint64_t)t->shape[i];
	}
	json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
	if (!json_is_integer(b) || !json_is_integer(e))
		return clip_fail(err, CLIP_EMODEL, "safetensors: tensor %s has bad offsets", name);
	json_int_t begin = json_integer_value(b), end = json_integer_value(e);
	if (begin < 0 || end < begin || (uint64_t)end > data_len)
		return clip_fail(err, CLIP_EMODEL,
		                 "safetensors: tensor %s lies outside the file (offsets %lld..%lld, "
		                 "%zu bytes of data): the file is truncated or its header is wrong",
		                 name, (long long)begin, (long long)end, data_len);
	if ((uint64_t)(end - begin) != numel * esize)
		return clip_fail(err, CLIP_EMODEL,
		                 "safetensors: tensor %s has %lld bytes but its shape and dtype need %llu",
		                 name, (long long)(end - begin), (unsigned long long)(numel * esize));
	t->data = data + begin;
	t->nbytes = (size_t)(end - begin);
	if (!(t->name = strdup(name)))
		return clip_fail(err, CLIP_ENOMEM, "out of memory");
	return CLIP_OK;
}

int st_open(const char *path, st_file *f, clip_err *err)
{
	int fd = -1, rc;
	struct stat st;
	json_t *root = NULL;

	memset(f, 0, sizeof *f);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return clip_fail(err, errno == ENOENT ? CLIP_EMODEL : CLIP_EIO, "cannot open %s: %s",
		                 path, strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = clip_fail(err, CLIP_EIO, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	if (st.st_size < 8) {
		rc = clip_fail(err, CLIP_EMODEL, "%s is too short to be a safetensors file", path);
		goto out;
	}
	f->map_size = (size_t)st.st_size;
	f->map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f->map == MAP_FAILED) {
		f->map = NULL;
		rc = clip_fail(err, CLIP_EIO, "cannot map %s: %s", path, strerror(errno));
		goto out;
	}
	const unsigned char *p = f->map;
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | p[i];
	if (hlen == 0 || hlen > MAX_HEADER || hlen > f->map_size - 8) {
		rc = clip_fail(err, CLIP_EMODEL, "%s: header length %llu does not fit the file", path,
		               (unsigned long long)hlen);
		goto out;
	}
	json_error_t jerr;
	root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		rc = clip_fail(err, CLIP_EMODEL, "%s: header is not a JSON object (%s)", path, jerr.text);
		goto out;
	}
	f->tensors = calloc(json_object_size(root) + 1, sizeof *f->tensors);
	if (!f->tensors) {
		rc = clip_fail(err, CLIP_ENOMEM, "out of memory");
		goto out;
	}
	const char *name;
	json_t *v;
	json_object_foreach(root, name, v) {
		if (strcmp(name, "__metadata__") == 0)
			continue;
		rc = parse_tensor(name, v, p + 8 + hlen, f->map_size - 8 - (size_t)hlen,
		                  &f->tensors[f->ntensors], err);
		if (rc != CLIP_OK)
			goto out;
		f->ntensors++;
	}
	rc = CLIP_OK;
out:
	json_decref(root);
	if (fd >= 0)
		close(fd);
	if (rc != CLIP_OK)
		st_close(f);
	return rc;
}
