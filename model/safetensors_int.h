/* Private to the model module: a memory-mapped safetensors file. */
#ifndef CLIPD_SAFETENSORS_INT_H
#define CLIPD_SAFETENSORS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "clip.h"

typedef enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_OTHER } st_dtype;

#define ST_MAX_DIMS 4

typedef struct st_tensor {
	char *name;
	st_dtype dtype;
	char dtype_name[8];
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	const void *data;    /* inside the mapping */
	size_t nbytes;
} st_tensor;

typedef struct st_file {
	void *map;
	size_t map_size;
	st_tensor *tensors;
	size_t ntensors;
} st_file;

/* Maps path and parses its header. Every tensor's offsets are checked to lie
 * inside the file and to match its dtype and shape. */
int st_open(const char *path, st_file *f, clip_err *err);
void st_close(st_file *f);

/* The tensor called name, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);

/* Tells the kernel that t's bytes will not be read again, so that the pages
 * entirely inside it leave the process's resident set (they were copied
 * elsewhere). Reading them later still works: they fault back in. */
void st_drop(const st_tensor *t);
/* The same for bytes [p, p + n) of the mapping. */
void st_drop_range(const void *p, size_t n);

/* Number of elements. */
int64_t st_numel(const st_tensor *t);

#endif
