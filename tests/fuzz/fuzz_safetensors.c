/*
 * fuzz_safetensors: the safetensors loader (model/safetensors.c) on any
 * bytes as model.safetensors. st_open promises that every tensor it hands
 * out lies inside the mapping and has exactly the bytes its shape and dtype
 * need; the harness checks both, and reads each tensor's first and last
 * byte, so a pointer outside the file faults here.
 */
#include <stdint.h>

#include "fuzz_util.h"
#include "safetensors_int.h"

static size_t dtype_size(const st_tensor *t)
{
	static const struct { const char *n; size_t s; } sizes[] = {
		{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8}, {"I32", 4},
		{"I16", 2}, {"I8", 1},  {"U8", 1},   {"BOOL", 1}, {"U16", 2}, {"U32", 4}, {"U64", 8},
	};
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
		if (strcmp(t->dtype_name, sizes[i].n) == 0)
			return sizes[i].s;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char path[64];
	st_file f;
	clip_err err;
	int fd = fuzz_memfile("model.safetensors", data, len, path, sizeof path);
	if (st_open(path, &f, &err) == CLIP_OK) {
		const unsigned char *lo = f.map, *hi = lo + f.map_size;
		for (size_t i = 0; i < f.ntensors; i++) {
			const st_tensor *t = &f.tensors[i];
			const unsigned char *p = t->data;
			FUZZ_CHECK(t->ndim >= 0 && t->ndim <= ST_MAX_DIMS);
			FUZZ_CHECK(p >= lo && p <= hi && t->nbytes <= (size_t)(hi - p));
			/* The element count the shape states, without wrapping, must be
			 * what the bytes hold. */
			uint64_t n = 1;
			int zero = 0;
			for (int d = 0; d < t->ndim; d++) {
				FUZZ_CHECK(t->shape[d] >= 0);
				zero |= t->shape[d] == 0;
			}
			for (int d = 0; d < t->ndim && !zero; d++)
				FUZZ_CHECK(!__builtin_mul_overflow(n, (uint64_t)t->shape[d], &n));
			if (zero)
				n = 0;
			size_t es = dtype_size(t);
			FUZZ_CHECK(es > 0 && n <= INT64_MAX / es);
			FUZZ_CHECK(n * es == t->nbytes);
			FUZZ_CHECK(st_numel(t) == (int64_t)n);
			FUZZ_CHECK(st_find(&f, t->name) != NULL);
			if (t->nbytes) {
				volatile unsigned char sink = p[0];
				sink = p[t->nbytes - 1];
				(void)sink;
			}
		}
		st_close(&f);
	} else {
		FUZZ_CHECK(err.code != CLIP_OK && err.msg[0]);
	}
	close(fd);
	return 0;
}
