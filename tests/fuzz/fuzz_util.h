/*
 * fuzz_util.h: what the libFuzzer harnesses of tests/fuzz share. Loaders
 * that take a path get the input through an in-memory file (memfd) named
 * /proc/self/fd/N, so nothing touches the disk per input. FUZZ_CHECK stops
 * the run (abort: libFuzzer saves the input) when an invariant that a
 * parser promises does not hold.
 */
#ifndef CLIPD_FUZZ_UTIL_H
#define CLIPD_FUZZ_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__,     \
			        #cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* The descriptors this process has open (entries of /proc/self/fd, the
 * directory's own included): harnesses compare it with a base to catch a
 * leaked descriptor. */
static inline int fuzz_count_fds(void)
{
	int n = 0;
	DIR *dir = opendir("/proc/self/fd");
	FUZZ_CHECK(dir != NULL);
	while (readdir(dir))
		n++;
	closedir(dir);
	return n;
}

/* An in-memory file holding a copy of data[len]; its path (the caller's
 * buffer, /proc/self/fd/N) goes in path. Returns the descriptor, which the
 * caller closes; aborts when memfd_create fails (nothing to fuzz then). */
static inline int fuzz_memfile(const char *name, const void *data, size_t len, char *path,
                               size_t path_size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	FUZZ_CHECK(fd >= 0);
	const char *p = data;
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(fd, p + done, len - done);
		FUZZ_CHECK(w > 0);
		done += (size_t)w;
	}
	snprintf(path, path_size, "/proc/self/fd/%d", fd);
	return fd;
}

/* Splits data at the first occurrence of sep: [0, *first) and the rest
 * after sep in *second, *second_len (NULL, 0 without sep). */
static inline void fuzz_split(const uint8_t *data, size_t len, const char *sep, size_t *first,
                              const uint8_t **second, size_t *second_len)
{
	size_t n = strlen(sep);
	const uint8_t *hit = len >= n ? memmem(data, len, sep, n) : NULL;
	if (!hit) {
		*first = len;
		*second = NULL;
		*second_len = 0;
		return;
	}
	*first = (size_t)(hit - data);
	*second = hit + n;
	*second_len = len - *first - n;
}

/* The reference kit: $CLIPD_REFERENCE, else ../shared/reference beside
 * the source tree ($CLIPD_SOURCE_ROOT, set by run.sh). Aborts when neither
 * is set: a harness that needs the kit cannot run without it. */
static inline const char *fuzz_reference(void)
{
	static char buf[4096];
	const char *r = getenv("CLIPD_REFERENCE");
	if (r && *r)
		return r;
	const char *src = getenv("CLIPD_SOURCE_ROOT");
	if (!src || !*src) {
		fprintf(stderr, "fuzz: set CLIPD_REFERENCE to the reference kit (../shared/reference)\n");
		abort();
	}
	snprintf(buf, sizeof buf, "%s/../shared/reference", src);
	return buf;
}

#endif
