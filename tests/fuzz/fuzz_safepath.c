/*
 * fuzz_safepath: the path resolver (server/safepath.c) on any path.
 *
 * Input: byte 0 flags (bit 0: open as a directory, not a file), then the
 * path, then optionally "\n" and up to four root names one per line (the
 * default roots below when there are none).
 *
 * Lexical layer, with the path made absolute: sp_clean's answer is clean
 * (starts with '/', no empty, "." or ".." component, no trailing slash but
 * for "/" itself) and cleaning it again changes nothing; sp_map's answer
 * is the longest root that is a component-wise parent of the cleaned path,
 * its rel has no "." or ".." and no outer slash, root + "/" + rel is the
 * cleaned path again, and a 403 means no root contains it.
 *
 * File-system layer, with the path relative: a fixed tree is built once in
 * $TMPDIR (files, directories, a FIFO, and symbolic links leading out of
 * the root, to /etc, to the parent and back inside). sp_open and sp_lstat
 * beneath the root's descriptor, once through openat2 and once through the
 * per-component walk, must agree (same status; on success the same inode),
 * and whatever they open must be an object inside the root reached without
 * a link: a regular file or directory of the kind asked for, never the
 * file outside, never a link's target. Descriptors are closed; a leak
 * shows in the count checked every 256 inputs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fuzz_util.h"
#include "safepath.h"

#define MAX_INSIDE 64

static int root_fd = -1;
static int fd_base;
static unsigned long runs;
/* What is inside the root, by lstat (links included, as themselves). */
static struct inside {
	dev_t dev;
	ino_t ino;
	mode_t mode;
} inside[MAX_INSIDE];
static int n_inside;
static struct stat outside_file;

static const char *const default_roots[] = {"/srv/photos", "/srv/photos/deep", "/home/u", "/"};

static int note_inside(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)path, (void)type, (void)ftw;
	FUZZ_CHECK(n_inside < MAX_INSIDE);
	inside[n_inside].dev = st->st_dev;
	inside[n_inside].ino = st->st_ino;
	inside[n_inside].mode = st->st_mode;
	n_inside++;
	return 0;
}

static void put_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	FUZZ_CHECK(fd >= 0);
	FUZZ_CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
}

static void build_tree(void)
{
	const char *tmp = getenv("TMPDIR");
	char top[512], p[600], q[600];
	snprintf(top, sizeof top, "%s/clipd-fuzz-safepath-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	FUZZ_CHECK(mkdtemp(top));
#define AT(...) (snprintf(p, sizeof p, __VA_ARGS__), p)
	FUZZ_CHECK(mkdir(AT("%s/outside", top), 0755) == 0);
	put_file(AT("%s/outside/secret", top), "outside the root");
	FUZZ_CHECK(stat(p, &outside_file) == 0);
	FUZZ_CHECK(mkdir(AT("%s/root", top), 0755) == 0);
	FUZZ_CHECK(mkdir(AT("%s/root/sub", top), 0755) == 0);
	FUZZ_CHECK(mkdir(AT("%s/root/sub/deep", top), 0755) == 0);
	FUZZ_CHECK(mkdir(AT("%s/root/empty", top), 0755) == 0);
	put_file(AT("%s/root/a.png", top), "a");
	put_file(AT("%s/root/.hidden", top), "h");
	put_file(AT("%s/root/name with space.jpg", top), "s");
	put_file(AT("%s/root/sub/b.txt", top), "b");
	put_file(AT("%s/root/sub/deep/c.jpg", top), "c");
	FUZZ_CHECK(mkfifo(AT("%s/root/fifo", top), 0644) == 0);
	FUZZ_CHECK(mkfifo(AT("%s/root/sub/deep/pipe", top), 0644) == 0);
	snprintf(q, sizeof q, "%s/outside/secret", top);
	FUZZ_CHECK(symlink(q, AT("%s/root/abs_out", top)) == 0);
	FUZZ_CHECK(symlink("../outside/secret", AT("%s/root/link_out", top)) == 0);
	FUZZ_CHECK(symlink("../outside", AT("%s/root/dir_out", top)) == 0);
	FUZZ_CHECK(symlink("/etc", AT("%s/root/sub/etc", top)) == 0);
	FUZZ_CHECK(symlink("..", AT("%s/root/sub/up", top)) == 0);
	FUZZ_CHECK(symlink("a.png", AT("%s/root/link_in", top)) == 0);
	FUZZ_CHECK(symlink("deep", AT("%s/root/sub/deep_link", top)) == 0);
	FUZZ_CHECK(symlink("nowhere", AT("%s/root/dangling", top)) == 0);
#undef AT
	snprintf(p, sizeof p, "%s/root", top);
	FUZZ_CHECK(nftw(p, note_inside, 8, FTW_PHYS) == 0);
	api_err err;
	FUZZ_CHECK(sp_root_open(p, &root_fd, &err) == 0);
	char **names = NULL;
	size_t n = 0;
	FUZZ_CHECK(sp_list(root_fd, 100, &names, &n, &err) == 0);
	FUZZ_CHECK(n == 11); /* the names made above directly under root */
	for (size_t i = 1; i < n; i++)
		FUZZ_CHECK(strcmp(names[i - 1], names[i]) < 0);
	sp_list_free(names, n);
}

static const struct inside *find_inside(const struct stat *st)
{
	for (int i = 0; i < n_inside; i++)
		if (inside[i].dev == st->st_dev && inside[i].ino == st->st_ino)
			return &inside[i];
	return NULL;
}

/* Whether clean is a clean absolute path. */
static int is_clean(const char *clean)
{
	size_t len = strlen(clean);
	if (clean[0] != '/')
		return 0;
	if (len == 1)
		return 1;
	if (clean[len - 1] == '/' || strstr(clean, "//") || strstr(clean, "/./") ||
	    strstr(clean, "/../"))
		return 0;
	if ((len >= 2 && strcmp(clean + len - 2, "/.") == 0) ||
	    (len >= 3 && strcmp(clean + len - 3, "/..") == 0))
		return 0;
	return 1;
}

/* Whether the clean root contains the clean path, component-wise. */
static size_t contains(const char *root, const char *path)
{
	size_t rl = strlen(root);
	if (strcmp(root, "/") == 0)
		return 1;
	if (strncmp(root, path, rl) == 0 && (path[rl] == 0 || path[rl] == '/'))
		return rl;
	return 0;
}

static void check_lexical(const char *path, const char *const *roots, int nroots)
{
	char clean[SP_PATH_MAX], again[SP_PATH_MAX], rel[SP_PATH_MAX];
	api_err err;
	if (sp_clean(path, clean, sizeof clean, &err) != 0) {
		FUZZ_CHECK(api_err_status(&err, NULL) == 400);
		return;
	}
	FUZZ_CHECK(is_clean(clean));
	FUZZ_CHECK(sp_clean(clean, again, sizeof again, &err) == 0 && strcmp(clean, again) == 0);

	/* The longest root containing it, by this harness's own reckoning. */
	int best = -1;
	size_t best_len = 0;
	char rclean[4][SP_PATH_MAX];
	for (int i = 0; i < nroots; i++) {
		if (sp_clean(roots[i], rclean[i], sizeof rclean[i], &err) != 0) {
			rclean[i][0] = 0;
			continue;
		}
		size_t l = contains(rclean[i], clean);
		if (l && (best < 0 || l > best_len))
			best = i, best_len = l;
	}
	int which = -7;
	int rc = sp_map(roots, nroots, clean, &which, rel, sizeof rel, &err);
	if (rc != 0) {
		/* A root that does not clean is a 400 of the map too. */
		int status = api_err_status(&err, NULL);
		FUZZ_CHECK(status == 400 || (status == 403 && best < 0));
		return;
	}
	FUZZ_CHECK(which >= 0 && which < nroots && best >= 0);
	FUZZ_CHECK(strlen(rclean[which]) == strlen(rclean[best]));
	FUZZ_CHECK(contains(rclean[which], clean));
	size_t rl = strlen(rel);
	if (rl) {
		FUZZ_CHECK(rel[0] != '/' && rel[rl - 1] != '/');
		char joined[2 * SP_PATH_MAX + 2];
		snprintf(joined, sizeof joined, "/%s", rel);
		FUZZ_CHECK(is_clean(joined));
		snprintf(joined, sizeof joined, "%s/%s",
		         strcmp(rclean[which], "/") == 0 ? "" : rclean[which], rel);
		FUZZ_CHECK(strcmp(joined, clean) == 0);
	} else {
		FUZZ_CHECK(strcmp(rclean[which], clean) == 0);
	}
	/* Either way through sp_map: the same answer for the uncleaned path. */
	char rel2[SP_PATH_MAX];
	int which2 = -7;
	FUZZ_CHECK(sp_map(roots, nroots, path, &which2, rel2, sizeof rel2, &err) == 0);
	FUZZ_CHECK(which2 == which && strcmp(rel2, rel) == 0);
}

/* One open (and lstat) of rel, with openat2 on or off. */
struct outcome {
	int rc, code;
	struct stat st;
	int lrc, lcode;
	struct stat lst;
};

static void open_once(const char *rel, sp_kind kind, int use_openat2, struct outcome *o)
{
	api_err err;
	int fd = -1;
	sp_set_openat2(use_openat2);
	memset(o, 0, sizeof *o);
	o->rc = sp_open(root_fd, rel, kind, &fd, &o->st, &err);
	o->code = o->rc ? api_err_status(&err, NULL) : 0;
	if (o->rc == 0) {
		FUZZ_CHECK(fd >= 0);
		struct stat now;
		FUZZ_CHECK(fstat(fd, &now) == 0);
		FUZZ_CHECK(now.st_ino == o->st.st_ino && now.st_dev == o->st.st_dev);
		int fl = fcntl(fd, F_GETFL);
		FUZZ_CHECK(fl >= 0 && (fl & O_ACCMODE) == O_RDONLY);
		FUZZ_CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
		close(fd);
	} else {
		FUZZ_CHECK(fd == -1);
		FUZZ_CHECK(o->code == 400 || o->code == 403 || o->code == 404);
		FUZZ_CHECK(strlen(err.msg) < sizeof err.msg);
	}
	o->lrc = sp_lstat(root_fd, rel, &o->lst, &err);
	o->lcode = o->lrc ? api_err_status(&err, NULL) : 0;
	if (o->lrc)
		FUZZ_CHECK(o->lcode == 400 || o->lcode == 403 || o->lcode == 404);
}

static void check_open(const char *rel, sp_kind kind)
{
	struct outcome walk, o2;
	int have2 = sp_have_openat2();
	open_once(rel, kind, 0, &walk);
	if (have2) {
		open_once(rel, kind, 1, &o2);
		FUZZ_CHECK(o2.code == walk.code);
		FUZZ_CHECK(o2.lcode == walk.lcode);
		if (walk.rc == 0)
			FUZZ_CHECK(o2.st.st_ino == walk.st.st_ino && o2.st.st_dev == walk.st.st_dev);
		if (walk.lrc == 0)
			FUZZ_CHECK(o2.lst.st_ino == walk.lst.st_ino);
	}
	if (walk.rc == 0) {
		const struct inside *in = find_inside(&walk.st);
		FUZZ_CHECK(in != NULL);
		FUZZ_CHECK(!(walk.st.st_ino == outside_file.st_ino &&
		             walk.st.st_dev == outside_file.st_dev));
		FUZZ_CHECK(kind == SP_DIR ? S_ISDIR(in->mode) : S_ISREG(in->mode));
		/* What was opened is what lstat names: never a link's target. */
		FUZZ_CHECK(walk.lrc == 0 && walk.lst.st_ino == walk.st.st_ino);
	}
	if (walk.lrc == 0)
		FUZZ_CHECK(find_inside(&walk.lst) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	if (root_fd < 0) {
		build_tree();
		fd_base = fuzz_count_fds();
	}
	if (len < 1 || len > 3 * SP_PATH_MAX)
		return 0;
	sp_kind kind = (data[0] & 1) ? SP_DIR : SP_FILE;
	/* The text, NUL-terminated; an embedded NUL ends it (as in a C API). */
	char *text = malloc(len);
	FUZZ_CHECK(text);
	memcpy(text, data + 1, len - 1);
	text[len - 1] = 0;

	const char *roots[4];
	int nroots = 0;
	char *nl = strchr(text, '\n');
	if (nl) {
		*nl = 0;
		for (char *r = nl + 1; r && nroots < 4;) {
			char *next = strchr(r, '\n');
			if (next)
				*next++ = 0;
			roots[nroots++] = r;
			r = next;
		}
	} else {
		for (int i = 0; i < 4; i++)
			roots[nroots++] = default_roots[i];
	}
	const char *path = text;

	/* Lexical: the path as given (when absolute) and made absolute. */
	char *abs = malloc(strlen(path) + 2);
	FUZZ_CHECK(abs);
	abs[0] = '/';
	strcpy(abs + 1, path);
	check_lexical(path[0] == '/' ? path : abs, roots, nroots);

	/* Beneath the root's descriptor: the path as a relative one. */
	check_open(path, kind);
	free(abs);
	free(text);

	if (++runs % 256 == 0)
		FUZZ_CHECK(fuzz_count_fds() <= fd_base + 2);
	return 0;
}
