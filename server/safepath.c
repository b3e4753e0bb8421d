/* safepath.c: opening beneath a root, never through a symbolic link. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(SYS_openat2) && __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define SP_OPENAT2 1
#endif

#include "safepath.h"

/* openat2: 1 while it may be tried, 0 once the kernel said ENOSYS or a
 * test turned it off. Any thread may clear it; a stale read only costs one
 * more ENOSYS. */
static atomic_int openat2_ok = 1;

int sp_have_openat2(void)
{
#ifdef SP_OPENAT2
	if (atomic_load(&openat2_ok)) {
		/* One probe: the kernel may lack it (before Linux 5.6). */
		struct open_how how;
		memset(&how, 0, sizeof how);
		how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
		long fd = syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
		if (fd >= 0)
			close((int)fd);
		else if (errno == ENOSYS)
			atomic_store(&openat2_ok, 0);
	}
	return atomic_load(&openat2_ok);
#else
	return 0;
#endif
}

void sp_set_openat2(int on)
{
	atomic_store(&openat2_ok, on ? 1 : 0);
}

/* How a relative path is shown in messages: "." for the root itself. */
static const char *shown(const char *rel)
{
	return rel && *rel ? rel : ".";
}

/* ---- lexical ---------------------------------------------------------------- */

int sp_clean(const char *path, char *out, size_t size, api_err *err)
{
	size_t o = 0;
	if (!path || !*path)
		return api_fail(err, API_EBADREQ, "the path is empty");
	if (path[0] != '/')
		return api_fail(err, API_EBADREQ, "the path is not absolute (it must start with /)");
	if (strlen(path) >= SP_PATH_MAX || size < 2)
		return api_fail(err, API_EBADREQ, "the path is longer than %d bytes", SP_PATH_MAX - 1);
	for (const char *p = path; *p;) {
		while (*p == '/')
			p++;
		const char *c = p;
		while (*p && *p != '/')
			p++;
		size_t len = (size_t)(p - c);
		if (len == 0 || (len == 1 && c[0] == '.'))
			continue;
		if (len == 2 && c[0] == '.' && c[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--; /* the slash before it */
			continue;
		}
		if (o + 1 + len + 1 > size)
			return api_fail(err, API_EBADREQ, "the path is longer than %zu bytes", size - 1);
		out[o++] = '/';
		memcpy(out + o, c, len);
		o += len;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = 0;
	return 0;
}

int sp_map(const char *const *roots, int n, const char *path, int *which, char *rel,
           size_t size, api_err *err)
{
	char clean[SP_PATH_MAX], root[SP_PATH_MAX];
	int best = -1;
	size_t best_len = 0;
	int rc;
	*which = -1;
	if (size)
		rel[0] = 0;
	if ((rc = sp_clean(path, clean, sizeof clean, err)))
		return rc;
	for (int i = 0; i < n; i++) {
		api_err ignored;
		if (!roots[i] || sp_clean(roots[i], root, sizeof root, &ignored))
			continue;
		size_t len = strlen(root);
		int under = len == 1 ? 1 /* "/" */
		                     : strncmp(clean, root, len) == 0 &&
		                               (clean[len] == 0 || clean[len] == '/');
		if (under && (best < 0 || len > best_len)) {
			best = i;
			best_len = len;
		}
	}
	if (best < 0)
		return api_fail(err, API_EFORBIDDEN, "the path is outside every allowed directory");
	const char *below = clean + best_len;
	while (*below == '/')
		below++;
	if (strlen(below) >= size)
		return api_fail(err, API_EBADREQ, "the path is too long");
	memcpy(rel, below, strlen(below) + 1);
	*which = best;
	return 0;
}

int sp_join(const char *dir, const char *name, char *out, size_t size, api_err *err)
{
	int n = dir && *dir ? snprintf(out, size, "%s/%s", dir, name) : snprintf(out, size, "%s", name);
	if (n < 0 || (size_t)n >= size)
		return api_fail(err, API_EBADREQ, "a path under the directory is longer than %zu bytes",
		                size - 1);
	return 0;
}

/* ---- beneath a descriptor ------------------------------------------------- */

/* The error of a failed open or stat of rel (errno e). */
static int open_error(int e, const char *rel, api_err *err)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
		return api_fail(err, API_ENOTFOUND, "'%s' does not exist", shown(rel));
	case ELOOP:
		return api_fail(err, API_EFORBIDDEN,
		                "'%s' is or passes through a symbolic link: links are not followed "
		                "under an allowed directory", shown(rel));
	case EXDEV:
		return api_fail(err, API_EFORBIDDEN, "'%s' leads outside its allowed directory",
		                shown(rel));
	case EACCES:
	case EPERM:
		return api_fail(err, API_EFORBIDDEN, "'%s': permission denied", shown(rel));
	case ENAMETOOLONG:
		return api_fail(err, API_EBADREQ, "'%s': a name in it is too long", shown(rel));
	case ENXIO:
	case ENODEV:
	case EOPNOTSUPP:
		return api_fail(err, API_EBADREQ, "'%s' is not a regular file", shown(rel));
	default:
		return api_fail(err, API_EIO, "cannot open '%s': %s", shown(rel), strerror(e));
	}
}

static int kind_error(const struct stat *st, sp_kind kind, const char *rel, api_err *err)
{
	if (S_ISLNK(st->st_mode))
		return open_error(ELOOP, rel, err);
	if (kind == SP_DIR && !S_ISDIR(st->st_mode))
		return api_fail(err, API_EBADREQ, "'%s' is not a directory", shown(rel));
	if (kind == SP_FILE && S_ISDIR(st->st_mode))
		return api_fail(err, API_EBADREQ, "'%s' is a directory, not a file", shown(rel));
	if (kind == SP_FILE && !S_ISREG(st->st_mode))
		return api_fail(err, API_EBADREQ,
		                "'%s' is not a regular file (a FIFO, socket or device is never read)",
		                shown(rel));
	return 0;
}

/* Splits rel into its components in buf (each NUL-terminated, in order),
 * refusing an absolute path and "..". Empty and "." components go. */
static int split(const char *rel, char *buf, size_t size, int *ncomp, api_err *err)
{
	size_t o = 0;
	*ncomp = 0;
	if (rel[0] == '/')
		return api_fail(err, API_EFORBIDDEN, "'%s' is absolute: not beneath its directory", rel);
	if (strlen(rel) >= size)
		return api_fail(err, API_EBADREQ, "the path is longer than %zu bytes", size - 1);
	for (const char *p = rel; *p;) {
		while (*p == '/')
			p++;
		const char *c = p;
		while (*p && *p != '/')
			p++;
		size_t len = (size_t)(p - c);
		if (len == 0 || (len == 1 && c[0] == '.'))
			continue;
		if (len == 2 && c[0] == '.' && c[1] == '.')
			return open_error(EXDEV, rel, err);
		memcpy(buf + o, c, len);
		buf[o + len] = 0;
		o += len + 1;
		(*ncomp)++;
	}
	return 0;
}

/* One component beneath cur as a directory (O_PATH), no symbolic link. */
static int step(int cur, const char *comp, const char *rel, int *out, api_err *err)
{
	int fd = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		*out = fd;
		return 0;
	}
	int e = errno;
	struct stat st;
	/* O_NOFOLLOW | O_DIRECTORY on a link says ENOTDIR: name the link. */
	if ((e == ENOTDIR || e == ELOOP) && fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISLNK(st.st_mode))
		e = ELOOP;
	return open_error(e, rel, err);
}

#ifdef SP_OPENAT2
/* The directory dir (relative, "..", "." and links refused) beneath dirfd
 * by openat2. Returns 0 with *out set, an error, or -1 when openat2 cannot
 * be used here (the caller walks instead). */
static int beneath_openat2(int dirfd, const char *dir, const char *rel, int *out, api_err *err)
{
	struct open_how how;
	memset(&how, 0, sizeof how);
	/* No O_NOFOLLOW: with it a link as the last component is ENOTDIR;
	 * RESOLVE_NO_SYMLINKS makes it ELOOP, as in the middle. */
	how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
	for (int tries = 0; tries < 4; tries++) {
		long fd = syscall(SYS_openat2, dirfd, dir, &how, sizeof how);
		if (fd >= 0) {
			*out = (int)fd;
			return 0;
		}
		switch (errno) {
		case EAGAIN: /* a concurrent rename or mount: try again */
			continue;
		case ENOSYS:
			atomic_store(&openat2_ok, 0);
			return -1;
		case EINVAL: /* flags this kernel does not know */
		case E2BIG:
		case EPERM:  /* a seccomp filter that refuses new system calls */
			return -1;
		default:
			return open_error(errno, rel, err);
		}
	}
	return -1;
}
#endif

/* Opens the parent of the last of comps[0..n) beneath dirfd: *pfd is
 * dirfd itself (not to be closed) when n is 1. */
static int open_parent(int dirfd, char *comps, int n, const char *rel, int *pfd, api_err *err)
{
	*pfd = dirfd;
	if (n <= 1)
		return 0;
#ifdef SP_OPENAT2
	if (atomic_load(&openat2_ok)) {
		/* comps joined back with '/': the last NUL before the final
		 * component stays the end of the string. */
		char dir[SP_PATH_MAX];
		size_t o = 0;
		const char *c = comps;
		for (int i = 0; i < n - 1; i++) {
			size_t len = strlen(c);
			if (i)
				dir[o++] = '/';
			memcpy(dir + o, c, len);
			o += len;
			c += len + 1;
		}
		dir[o] = 0;
		int rc = beneath_openat2(dirfd, dir, rel, pfd, err);
		if (rc != -1)
			return rc; /* opened, or refused: -1 is "walk instead" */
	}
#endif
	int cur = dirfd;
	const char *c = comps;
	for (int i = 0; i < n - 1; i++) {
		int next = -1;
		int rc = step(cur, c, rel, &next, err);
		if (cur != dirfd)
			close(cur);
		if (rc)
			return rc;
		cur = next;
		c += strlen(c) + 1;
	}
	*pfd = cur;
	return 0;
}

/* The last component of comps[0..n). */
static const char *last_comp(const char *comps, int n)
{
	const char *c = comps;
	for (int i = 0; i < n - 1; i++)
		c += strlen(c) + 1;
	return c;
}

int sp_open(int dirfd, const char *rel, sp_kind kind, int *fd, struct stat *st, api_err *err)
{
	char comps[SP_PATH_MAX];
	struct stat before, after;
	int n, pfd = dirfd, f = -1, rc;
	/* O_NONBLOCK: should the file be swapped for a FIFO after the look
	 * below, the open returns at once (and the fstat after refuses it). */
	int flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC |
	            (kind == SP_DIR ? O_DIRECTORY : 0);
	*fd = -1;
	if ((rc = split(rel ? rel : "", comps, sizeof comps, &n, err)))
		return rc;
	if (n == 0) {
		if (kind != SP_DIR)
			return api_fail(err, API_EBADREQ, "'.' is a directory, not a file");
		f = openat(dirfd, ".", flags);
	} else {
		if ((rc = open_parent(dirfd, comps, n, rel, &pfd, err)))
			goto out;
		const char *name = last_comp(comps, n);
		/* Look first, so that a FIFO or a device is never even opened. */
		if (fstatat(pfd, name, &before, AT_SYMLINK_NOFOLLOW) != 0) {
			rc = open_error(errno, rel, err);
			goto out;
		}
		if ((rc = kind_error(&before, kind, rel, err)))
			goto out;
		f = openat(pfd, name, flags);
	}
	if (f < 0) {
		rc = open_error(errno, rel, err);
		goto out;
	}
	if (fstat(f, &after) != 0) {
		rc = open_error(errno, rel, err);
		goto out;
	}
	if ((rc = kind_error(&after, kind, rel, err)))
		goto out;
	if (st)
		*st = after;
	*fd = f;
	f = -1;
out:
	if (f >= 0)
		close(f);
	if (pfd != dirfd)
		close(pfd);
	return rc;
}

int sp_lstat(int dirfd, const char *rel, struct stat *st, api_err *err)
{
	char comps[SP_PATH_MAX];
	int n, pfd = dirfd, rc;
	if ((rc = split(rel ? rel : "", comps, sizeof comps, &n, err)))
		return rc;
	if (n == 0)
		return fstat(dirfd, st) == 0 ? 0 : open_error(errno, rel, err);
	if ((rc = open_parent(dirfd, comps, n, rel, &pfd, err)))
		return rc;
	if (fstatat(pfd, last_comp(comps, n), st, AT_SYMLINK_NOFOLLOW) != 0)
		rc = open_error(errno, rel, err);
	if (pfd != dirfd)
		close(pfd);
	return rc;
}

int sp_root_open(const char *path, int *fd, api_err *err)
{
	struct stat st;
	*fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*fd >= 0)
		return 0;
	int e = errno;
	if (e == ENOTDIR && stat(path, &st) == 0)
		return api_fail(err, API_EBADREQ, "%s is not a directory", path);
	return api_fail(err, e == ENOENT || e == ENOTDIR ? API_ENOTFOUND : API_EFORBIDDEN,
	                "cannot open %s: %s", path, strerror(e));
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void sp_list_free(char **names, size_t n)
{
	for (size_t i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
}

int sp_list(int dirfd, size_t max, char ***names, size_t *n, api_err *err)
{
	char **v = NULL;
	size_t nv = 0, cap = 0;
	DIR *d = NULL;
	int rc = 0;
	*names = NULL;
	*n = 0;
	/* A new open file description: the caller's offset is left alone, and
	 * an O_PATH descriptor can be listed too. */
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d = fdopendir(fd))) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return e == EACCES || e == EPERM
		               ? api_fail(err, API_EFORBIDDEN, "cannot read the directory: %s", strerror(e))
		               : api_fail(err, API_EIO, "cannot read the directory: %s", strerror(e));
	}
	for (;;) {
		errno = 0;
		struct dirent *e = readdir(d);
		if (!e) {
			if (errno)
				rc = api_fail(err, API_EIO, "cannot read the directory: %s", strerror(errno));
			break;
		}
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (nv == max) {
			rc = api_fail(err, API_ETOOBIG, "the directory has more than %zu entries", max);
			break;
		}
		if (nv == cap) {
			size_t nc = cap ? cap * 2 : 64;
			char **p = realloc(v, nc * sizeof *p);
			if (!p) {
				rc = api_fail(err, API_ENOMEM, "out of memory");
				break;
			}
			v = p;
			cap = nc;
		}
		if (!(v[nv] = strdup(e->d_name))) {
			rc = api_fail(err, API_ENOMEM, "out of memory");
			break;
		}
		nv++;
	}
	closedir(d);
	if (rc) {
		sp_list_free(v, nv);
		return rc;
	}
	if (nv)
		qsort(v, nv, sizeof *v, cmp_names);
	*names = v;
	*n = nv;
	return 0;
}
