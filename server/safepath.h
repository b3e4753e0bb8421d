/*
 * safepath: files under a root directory, reached without ever leaving it.
 *
 * A root (an --allow-root or --watch directory) is opened once, at start,
 * as a descriptor (sp_root_open). Everything under it is then opened
 * RELATIVE TO THAT DESCRIPTOR, refusing a symbolic link on every component
 * (not only the last one) and any "..": openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS) where the kernel has it, otherwise a walk of
 * openat(O_NOFOLLOW | O_DIRECTORY) one component at a time. What is checked
 * is what is opened: a directory swapped for a symbolic link between a
 * client's request and the open cannot lead outside the root, because no
 * string is resolved twice.
 *
 * A file is looked at (fstatat, no follow) before it is opened, opened
 * non-blocking, and checked again (fstat) after: a FIFO, socket or device
 * under a root, or a file swapped for one, gets a 400 at once instead of an
 * open() or read() that never returns.
 *
 * Two layers, kept apart so that a fuzzer can drive each alone:
 * - sp_map: pure and lexical. It maps a path given by a client onto one of
 *   a list of root names and the path relative to it, without touching the
 *   file system, so that a path outside every root gets the same answer
 *   whether or not it exists (no file-existence oracle).
 * - sp_open, sp_lstat, sp_list: the file system, beneath a directory fd.
 *
 * Errors are api_err values (errors.h), with messages that name only the
 * path relative to the root, never the root itself. Depends on nothing of
 * the app or the HTTP layer.
 *
 * Thread-safety: every function is thread-safe; descriptors and lists
 * returned belong to the caller. sp_set_openat2 is meant for tests.
 */
#ifndef CLIPD_SAFEPATH_H
#define CLIPD_SAFEPATH_H

#include <stddef.h>
#include <sys/stat.h>

#include "errors.h"

/* Longest path taken, absolute or relative, terminating NUL included. */
#define SP_PATH_MAX 4096

typedef enum sp_kind {
	SP_FILE,  /* a regular file, opened O_RDONLY | O_NONBLOCK */
	SP_DIR,   /* a directory, opened O_RDONLY | O_DIRECTORY */
} sp_kind;

/* Lexically cleans the absolute path into out (size bytes): repeated
 * slashes and "." components go, ".." removes the component before it (at
 * "/" it stays "/"), no trailing slash but for "/" itself. Touches no file.
 * Errors: 400 when path is empty, not absolute or too long for out. */
int sp_clean(const char *path, char *out, size_t size, api_err *err);

/* Maps path (absolute) onto roots[0..n) (absolute; cleaned here too):
 * after sp_clean, the longest root equal to the path or a parent of it.
 * On success *which is that root's index and rel (size bytes) the path
 * below it, "" for the root itself, with no "." or ".." and no leading or
 * trailing slash. Touches no file, so the answer never depends on what
 * exists. Errors: 400 (sp_clean), 403 when it lies under no root. */
int sp_map(const char *const *roots, int n, const char *path, int *which, char *rel,
           size_t size, api_err *err);

/* Opens the root directory at path (symbolic links in path itself are
 * followed: the administrator chose it) as an O_PATH descriptor for the
 * calls below. *fd is -1 on failure. Errors: 404 missing, 400 not a
 * directory, 403 other. */
int sp_root_open(const char *path, int *fd, api_err *err);

/* Opens rel (relative; "" is dirfd itself) beneath the directory dirfd as
 * kind, never through a symbolic link nor out of dirfd. *fd (the caller's
 * to close) is -1 on failure; *st, when not NULL, is the fstat of what was
 * opened. Errors: 404 missing; 403 a symbolic link on the way, a ".." or an
 * absolute rel, permission denied; 400 not of the kind asked for (FIFO,
 * socket, device, directory for a file), a name too long; 500 other I/O. */
int sp_open(int dirfd, const char *rel, sp_kind kind, int *fd, struct stat *st, api_err *err);

/* lstat of rel beneath dirfd, reached as sp_open reaches it (the last
 * component may be anything, a symbolic link included: it is not
 * followed). Errors as sp_open. */
int sp_lstat(int dirfd, const char *rel, struct stat *st, api_err *err);

/* The names in the directory dirfd (any descriptor of it, O_PATH too),
 * sorted by strcmp, without "." and "..". *names (free with sp_list_free)
 * is NULL on failure. Errors: 413 more than max entries, 403 unreadable,
 * 500 other. */
int sp_list(int dirfd, size_t max, char ***names, size_t *n, api_err *err);
void sp_list_free(char **names, size_t n);

/* Joins a relative dir ("" for the root) and a name into out: 400 when it
 * does not fit. */
int sp_join(const char *dir, const char *name, char *out, size_t size, api_err *err);

/* Whether openat2 is used (1: the kernel has it and it is enabled). */
int sp_have_openat2(void);

/* Tests: 0 forces the per-component openat walk, 1 allows openat2 again
 * (when the kernel has it). */
void sp_set_openat2(int on);

#endif
