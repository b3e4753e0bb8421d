/*
 * test_safepath: server/safepath.c against a real file system in a
 * temporary directory: the lexical mapping of client paths onto roots
 * (cleaning, "..", absolute and relative paths, no existence oracle), and
 * opening beneath a root descriptor with openat2 and with the
 * per-component walk alike: symbolic links on the last and on a middle
 * component, "..", absolute paths, FIFOs, sockets and device files (refused
 * at once: an alarm kills a run that blocks), directory listing, and two
 * races run for real: a directory swapped for a symbolic link to outside,
 * and a file swapped for a FIFO, while other threads open through them.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "safepath.h"
#include "tap.h"

static char tmp[256];   /* the test's directory */
static char root[300];  /* tmp/root: the allowed directory */
static char out[300];   /* tmp/out: outside it */

static void put(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");
	if (f) {
		fputs(content, f);
		fclose(f);
	}
}

static void pathf(char *buf, size_t n, const char *base, const char *rel)
{
	snprintf(buf, n, "%s/%s", base, rel);
}

/* Reads what fd holds (up to size - 1 bytes) as a string. */
static void slurp(int fd, char *buf, size_t size)
{
	ssize_t n = read(fd, buf, size - 1);
	buf[n > 0 ? n : 0] = 0;
}

static void setup(void)
{
	char p[512];
	snprintf(tmp, sizeof tmp, "/tmp/test_safepath.XXXXXX");
	if (!mkdtemp(tmp)) {
		perror("mkdtemp");
		exit(1);
	}
	snprintf(root, sizeof root, "%s/root", tmp);
	snprintf(out, sizeof out, "%s/out", tmp);
	mkdir(root, 0755);
	mkdir(out, 0755);
	pathf(p, sizeof p, root, "sub");
	mkdir(p, 0755);
	pathf(p, sizeof p, root, "sub/deeper");
	mkdir(p, 0755);
	pathf(p, sizeof p, root, "a.txt");
	put(p, "inside a");
	pathf(p, sizeof p, root, "sub/b.txt");
	put(p, "inside b");
	pathf(p, sizeof p, root, "sub/deeper/c.txt");
	put(p, "inside c");
	pathf(p, sizeof p, out, "secret.txt");
	put(p, "SECRET");
	pathf(p, sizeof p, out, "b.txt");
	put(p, "SECRET b");
	/* Links: to a file inside, to a file outside, to a directory outside,
	 * and an absolute one to the outside directory in a middle position. */
	pathf(p, sizeof p, root, "link-in");
	symlink("a.txt", p);
	pathf(p, sizeof p, root, "link-out");
	symlink("../out/secret.txt", p);
	pathf(p, sizeof p, root, "dirlink");
	symlink(out, p);
	pathf(p, sizeof p, root, "sub/up");
	symlink("..", p);
	pathf(p, sizeof p, root, "fifo");
	mkfifo(p, 0644);
}

static int root_fd(void)
{
	int fd;
	api_err e;
	if (sp_root_open(root, &fd, &e)) {
		printf("# sp_root_open: %s\n", e.msg);
		return -1;
	}
	return fd;
}

/* sp_open of rel as kind; the API code (0 when it opened) and, when it
 * opened, its content in buf. */
static int try_open(int rfd, const char *rel, sp_kind kind, char *buf, size_t size, api_err *e)
{
	int fd;
	struct stat st;
	int rc = sp_open(rfd, rel, kind, &fd, &st, e);
	if (buf)
		buf[0] = 0;
	if (rc) {
		if (fd != -1)
			return -1000; /* a failure must not hand out a descriptor */
		return rc;
	}
	if (kind == SP_FILE && !S_ISREG(st.st_mode))
		rc = -1001;
	if (kind == SP_DIR && !S_ISDIR(st.st_mode))
		rc = -1002;
	if (buf && kind == SP_FILE)
		slurp(fd, buf, size);
	close(fd);
	return rc;
}

/* ---- lexical ---------------------------------------------------------------- */

static void t_clean(void)
{
	static const char *const cases[][2] = {
		{"/", "/"},
		{"//", "/"},
		{"/a/b", "/a/b"},
		{"/a//b/", "/a/b"},
		{"/a/./b/.", "/a/b"},
		{"/a/b/../c", "/a/c"},
		{"/a/b/../../..", "/"},
		{"/../a", "/a"},
		{"/a/..b/c", "/a/..b/c"},
		{"/a/.../c", "/a/.../c"},
		{"/a/b/..", "/a"},
	};
	char buf[SP_PATH_MAX];
	api_err e;
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		int rc = sp_clean(cases[i][0], buf, sizeof buf, &e);
		CHECKF(rc == 0 && !strcmp(buf, cases[i][1]), "sp_clean(%s) = %s (rc %d), want %s",
		       cases[i][0], rc ? "-" : buf, rc, cases[i][1]);
	}
	CHECK(sp_clean("a/b", buf, sizeof buf, &e) == API_EBADREQ);
	CHECK(sp_clean("", buf, sizeof buf, &e) == API_EBADREQ);
	CHECK(sp_clean(NULL, buf, sizeof buf, &e) == API_EBADREQ);
	char small[4];
	CHECK(sp_clean("/abcdef", small, sizeof small, &e) == API_EBADREQ);
	char *longp = malloc(SP_PATH_MAX + 10);
	memset(longp, 'a', SP_PATH_MAX + 9);
	longp[0] = '/';
	longp[SP_PATH_MAX + 9] = 0;
	CHECK(sp_clean(longp, buf, sizeof buf, &e) == API_EBADREQ);
	free(longp);
}

static void t_map(void)
{
	const char *roots[] = {"/srv/photos", "/srv/photos/deep/", "/data//pics"};
	char rel[SP_PATH_MAX];
	int which;
	api_err e;
	CHECK(sp_map(roots, 3, "/srv/photos", &which, rel, sizeof rel, &e) == 0 && which == 0 &&
	      !strcmp(rel, ""));
	CHECK(sp_map(roots, 3, "/srv/photos/", &which, rel, sizeof rel, &e) == 0 && which == 0 &&
	      !strcmp(rel, ""));
	CHECK(sp_map(roots, 3, "/srv/photos/2024//a.jpg", &which, rel, sizeof rel, &e) == 0 &&
	      which == 0 && !strcmp(rel, "2024/a.jpg"));
	/* The longest root wins. */
	CHECK(sp_map(roots, 3, "/srv/photos/deep/x/y.png", &which, rel, sizeof rel, &e) == 0 &&
	      which == 1 && !strcmp(rel, "x/y.png"));
	CHECK(sp_map(roots, 3, "/data/pics/./q.png", &which, rel, sizeof rel, &e) == 0 &&
	      which == 2 && !strcmp(rel, "q.png"));
	/* ".." inside the root stays inside; out of it is outside. */
	CHECK(sp_map(roots, 3, "/srv/photos/a/../b.png", &which, rel, sizeof rel, &e) == 0 &&
	      which == 0 && !strcmp(rel, "b.png"));
	CHECK(sp_map(roots, 3, "/srv/photos/../etc/passwd", &which, rel, sizeof rel, &e) ==
	      API_EFORBIDDEN && which == -1);
	CHECK(sp_map(roots, 3, "/srv/photos/deep/../../x", &which, rel, sizeof rel, &e) ==
	      API_EFORBIDDEN);
	/* A prefix of a name is not a parent. */
	CHECK(sp_map(roots, 3, "/srv/photosX/a.png", &which, rel, sizeof rel, &e) == API_EFORBIDDEN);
	CHECK(sp_map(roots, 3, "/srv", &which, rel, sizeof rel, &e) == API_EFORBIDDEN);
	/* Not absolute, empty: 400. */
	CHECK(sp_map(roots, 3, "srv/photos/a.png", &which, rel, sizeof rel, &e) == API_EBADREQ);
	CHECK(sp_map(roots, 3, "", &which, rel, sizeof rel, &e) == API_EBADREQ);
	CHECK(sp_map(roots, 0, "/srv/photos", &which, rel, sizeof rel, &e) == API_EFORBIDDEN);
	/* "/" as a root holds everything. */
	const char *slash[] = {"/"};
	CHECK(sp_map(slash, 1, "/etc/../etc/hosts", &which, rel, sizeof rel, &e) == 0 &&
	      which == 0 && !strcmp(rel, "etc/hosts"));
	CHECK(sp_map(slash, 1, "/", &which, rel, sizeof rel, &e) == 0 && !strcmp(rel, ""));
	/* rel too small for the answer: 400, never a cut path. */
	char tiny[4];
	CHECK(sp_map(roots, 3, "/srv/photos/abcdef", &which, tiny, sizeof tiny, &e) == API_EBADREQ);
}

/* A path outside every root gets the same answer, word for word, whether
 * it exists or not: the mapping never asks the file system. */
static void t_map_no_oracle(void)
{
	char there[512], missing[512], rel[SP_PATH_MAX];
	const char *roots[] = {root};
	int which;
	api_err e1, e2;
	pathf(there, sizeof there, out, "secret.txt");
	pathf(missing, sizeof missing, out, "no-such-file.txt");
	int r1 = sp_map(roots, 1, there, &which, rel, sizeof rel, &e1);
	int r2 = sp_map(roots, 1, missing, &which, rel, sizeof rel, &e2);
	CHECK(r1 == API_EFORBIDDEN && r2 == API_EFORBIDDEN && !strcmp(e1.msg, e2.msg));
	/* And through "..": lexically outside whatever the link says. */
	snprintf(there, sizeof there, "%s/dirlink/../../out/secret.txt", root);
	r1 = sp_map(roots, 1, there, &which, rel, sizeof rel, &e1);
	CHECK(r1 == API_EFORBIDDEN);
	/* Whereas the symlink's own path maps inside (sp_open refuses it). */
	snprintf(there, sizeof there, "%s/dirlink/secret.txt", root);
	CHECK(sp_map(roots, 1, there, &which, rel, sizeof rel, &e1) == 0 &&
	      !strcmp(rel, "dirlink/secret.txt"));
}

/* ---- beneath a descriptor: each case with openat2 and with the walk ------- */

static int mode_openat2;

static void set_mode(int openat2)
{
	mode_openat2 = openat2;
	sp_set_openat2(openat2);
}

static void t_open_regular(void)
{
	int rfd = root_fd();
	char buf[64];
	api_err e;
	REQUIRE(rfd >= 0);
	CHECK(try_open(rfd, "a.txt", SP_FILE, buf, sizeof buf, &e) == 0 && !strcmp(buf, "inside a"));
	CHECK(try_open(rfd, "sub/b.txt", SP_FILE, buf, sizeof buf, &e) == 0 &&
	      !strcmp(buf, "inside b"));
	CHECK(try_open(rfd, "sub/deeper/c.txt", SP_FILE, buf, sizeof buf, &e) == 0 &&
	      !strcmp(buf, "inside c"));
	CHECK(try_open(rfd, "./sub//deeper/./c.txt", SP_FILE, buf, sizeof buf, &e) == 0 &&
	      !strcmp(buf, "inside c"));
	/* The descriptor is non-blocking (so that a FIFO could never block). */
	int fd;
	REQUIRE(sp_open(rfd, "a.txt", SP_FILE, &fd, NULL, &e) == 0);
	CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	/* Directories. */
	CHECK(try_open(rfd, "", SP_DIR, NULL, 0, &e) == 0);
	CHECK(try_open(rfd, "sub", SP_DIR, NULL, 0, &e) == 0);
	CHECK(try_open(rfd, "sub/deeper", SP_DIR, NULL, 0, &e) == 0);
	CHECK(try_open(rfd, "a.txt", SP_DIR, NULL, 0, &e) == API_EBADREQ &&
	      strstr(e.msg, "not a directory"));
	CHECK(try_open(rfd, "sub", SP_FILE, NULL, 0, &e) == API_EBADREQ &&
	      strstr(e.msg, "is a directory"));
	CHECK(try_open(rfd, "", SP_FILE, NULL, 0, &e) == API_EBADREQ);
	/* Missing, at the end and in the middle. */
	CHECK(try_open(rfd, "nope.txt", SP_FILE, NULL, 0, &e) == API_ENOTFOUND);
	CHECK(try_open(rfd, "nope/b.txt", SP_FILE, NULL, 0, &e) == API_ENOTFOUND);
	CHECK(try_open(rfd, "a.txt/b.txt", SP_FILE, NULL, 0, &e) == API_ENOTFOUND);
	struct stat st;
	CHECK(sp_lstat(rfd, "sub/deeper/c.txt", &st, &e) == 0 && S_ISREG(st.st_mode) &&
	      st.st_size == 8);
	CHECK(sp_lstat(rfd, "link-out", &st, &e) == 0 && S_ISLNK(st.st_mode));
	CHECK(sp_lstat(rfd, "nope", &st, &e) == API_ENOTFOUND);
	close(rfd);
}

static void t_symlink_last(void)
{
	int rfd = root_fd();
	char buf[64];
	api_err e;
	REQUIRE(rfd >= 0);
	/* Even a link that stays inside is refused: links are never followed. */
	CHECK(try_open(rfd, "link-in", SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN &&
	      strstr(e.msg, "symbolic link"));
	CHECK(try_open(rfd, "link-out", SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN &&
	      !strstr(buf, "SECRET"));
	CHECK(try_open(rfd, "dirlink", SP_DIR, NULL, 0, &e) == API_EFORBIDDEN);
	CHECK(try_open(rfd, "sub/up", SP_DIR, NULL, 0, &e) == API_EFORBIDDEN);
	close(rfd);
}

static void t_symlink_middle(void)
{
	int rfd = root_fd();
	char buf[64];
	api_err e;
	REQUIRE(rfd >= 0);
	CHECK(try_open(rfd, "dirlink/secret.txt", SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN &&
	      strstr(e.msg, "symbolic link") && !strstr(buf, "SECRET"));
	CHECK(try_open(rfd, "sub/up/a.txt", SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN);
	CHECK(try_open(rfd, "sub/up/sub/b.txt", SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN);
	struct stat st;
	CHECK(sp_lstat(rfd, "dirlink/secret.txt", &st, &e) == API_EFORBIDDEN);
	/* The message names the path under the root, never the root. */
	CHECK(!strstr(e.msg, tmp));
	close(rfd);
}

static void t_dotdot_and_absolute(void)
{
	int rfd = root_fd();
	char buf[64], abs_secret[512];
	api_err e;
	REQUIRE(rfd >= 0);
	CHECK(try_open(rfd, "../out/secret.txt", SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN &&
	      !strstr(buf, "SECRET"));
	CHECK(try_open(rfd, "sub/../../out/secret.txt", SP_FILE, buf, sizeof buf, &e) ==
	      API_EFORBIDDEN);
	/* Even a ".." that would stay inside: sp_map cleans them first. */
	CHECK(try_open(rfd, "sub/../a.txt", SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN);
	CHECK(try_open(rfd, "..", SP_DIR, NULL, 0, &e) == API_EFORBIDDEN);
	pathf(abs_secret, sizeof abs_secret, out, "secret.txt");
	CHECK(try_open(rfd, abs_secret, SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN &&
	      !strstr(buf, "SECRET"));
	CHECK(try_open(rfd, "/etc/passwd", SP_FILE, NULL, 0, &e) == API_EFORBIDDEN);
	struct stat st;
	CHECK(sp_lstat(rfd, "../out", &st, &e) == API_EFORBIDDEN);
	close(rfd);
}

/* A FIFO with no writer: open(O_RDONLY) would block forever (the alarm in
 * main would then kill the test). */
static void t_fifo(void)
{
	int rfd = root_fd();
	api_err e;
	REQUIRE(rfd >= 0);
	CHECK(try_open(rfd, "fifo", SP_FILE, NULL, 0, &e) == API_EBADREQ &&
	      strstr(e.msg, "not a regular file"));
	CHECK(try_open(rfd, "fifo", SP_DIR, NULL, 0, &e) == API_EBADREQ);
	close(rfd);
}

static void t_socket(void)
{
	char p[512];
	api_err e;
	int rfd = root_fd();
	REQUIRE(rfd >= 0);
	pathf(p, sizeof p, root, "sock");
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	REQUIRE(strlen(p) < sizeof sa.sun_path);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", p);
	REQUIRE(s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0);
	CHECK(try_open(rfd, "sock", SP_FILE, NULL, 0, &e) == API_EBADREQ);
	close(s);
	unlink(p);
	close(rfd);
}

/* Device files (not creatable without privileges: /dev as the root). */
static void t_devices(void)
{
	int dfd;
	api_err e;
	REQUIRE(sp_root_open("/dev", &dfd, &e) == 0);
	CHECK(try_open(dfd, "null", SP_FILE, NULL, 0, &e) == API_EBADREQ &&
	      strstr(e.msg, "not a regular file"));
	CHECK(try_open(dfd, "zero", SP_FILE, NULL, 0, &e) == API_EBADREQ);
	struct stat st;
	if (sp_lstat(dfd, "tty", &st, &e) == 0 && S_ISCHR(st.st_mode))
		CHECK(try_open(dfd, "tty", SP_FILE, NULL, 0, &e) == API_EBADREQ);
	close(dfd);
}

static void t_list(void)
{
	int rfd = root_fd();
	char **names;
	size_t n;
	api_err e;
	REQUIRE(rfd >= 0);
	/* The O_PATH root descriptor itself can be listed. */
	REQUIRE(sp_list(rfd, 1000, &names, &n, &e) == 0);
	int sorted = 1, dots = 0, has_a = 0;
	for (size_t i = 0; i < n; i++) {
		if (i && strcmp(names[i - 1], names[i]) >= 0)
			sorted = 0;
		if (!strcmp(names[i], ".") || !strcmp(names[i], ".."))
			dots = 1;
		if (!strcmp(names[i], "a.txt"))
			has_a = 1;
	}
	CHECK(sorted && !dots && has_a && n >= 6);
	sp_list_free(names, n);
	/* Listed twice from one descriptor: its offset is not used up. */
	int sfd;
	REQUIRE(sp_open(rfd, "sub", SP_DIR, &sfd, NULL, &e) == 0);
	size_t n1 = 0, n2 = 0;
	CHECK(sp_list(sfd, 1000, &names, &n1, &e) == 0);
	sp_list_free(names, n1);
	CHECK(sp_list(sfd, 1000, &names, &n2, &e) == 0 && n1 == n2 && n1 == 3);
	sp_list_free(names, n2);
	close(sfd);
	/* Over the bound: 413, nothing handed out. */
	CHECK(sp_list(rfd, 2, &names, &n, &e) == API_ETOOBIG && names == NULL && n == 0);
	char small[64];
	CHECK(sp_join("a/b", "c.png", small, sizeof small, &e) == 0 && !strcmp(small, "a/b/c.png"));
	CHECK(sp_join("", "c.png", small, sizeof small, &e) == 0 && !strcmp(small, "c.png"));
	CHECK(sp_join("abc", "defghij", small, 8, &e) == API_EBADREQ);
	close(rfd);
}

/* ---- races ------------------------------------------------------------------ */

struct flipper {
	char a[512], b[512];   /* swapped back and forth by rename */
	char target[512];      /* what a is while swapped */
	atomic_int stop;
	int fifo;              /* the swapped-in object is a FIFO, not a link */
	atomic_long flips;
};

/* Waits until the swapping thread has swapped once (at most 10 s). */
static void wait_flipping(struct flipper *f)
{
	for (int i = 0; i < 10000 && atomic_load(&f->flips) == 0; i++)
		usleep(1000);
}

/* Opens go on for 3000 rounds and at least 200 swaps (at most 200,000). */
static int more_rounds(struct flipper *f, int i)
{
	return i < 200000 && (i < 3000 || atomic_load(&f->flips) < 200);
}

/* Swaps path a between what it is and a link to outside (or a FIFO). */
static void *flip(void *arg)
{
	struct flipper *f = arg;
	char held[600];
	snprintf(held, sizeof held, "%s.held", f->a);
	unlink(f->b);
	if (f->fifo)
		mkfifo(f->b, 0644);
	else
		symlink(f->target, f->b);
	while (!atomic_load(&f->stop)) {
		/* a -> held, b -> a (the swap), a -> b, held -> a (back). */
		if (rename(f->a, held) || rename(f->b, f->a) || rename(f->a, f->b) ||
		    rename(held, f->a)) {
			printf("# the swapping thread stopped: %s\n", strerror(errno));
			break;
		}
		atomic_fetch_add(&f->flips, 1);
	}
	return NULL;
}

/* A directory on the path is swapped for a link to outside again and
 * again while opens go through it: each open gets the inside file or an
 * error, never the outside one. */
static void t_race_dir_swap(void)
{
	struct flipper f = {0};
	pthread_t th;
	char buf[64];
	api_err e;
	int rfd = root_fd();
	REQUIRE(rfd >= 0);
	pathf(f.a, sizeof f.a, root, "sub");
	pathf(f.b, sizeof f.b, root, "sub.swap");
	snprintf(f.target, sizeof f.target, "%s", out);
	REQUIRE(pthread_create(&th, NULL, flip, &f) == 0);
	int opened = 0, refused = 0, leaked = 0;
	wait_flipping(&f);
	for (int i = 0; more_rounds(&f, i); i++) {
		int rc = try_open(rfd, "sub/b.txt", SP_FILE, buf, sizeof buf, &e);
		if (rc == 0 && !strcmp(buf, "inside b"))
			opened++;
		else if (rc == 0 || strstr(buf, "SECRET"))
			leaked++;
		else
			refused++;
	}
	atomic_store(&f.stop, 1);
	pthread_join(th, NULL);
	printf("# %s: %ld swaps; %d opened inside, %d refused, %d leaked\n",
	       mode_openat2 ? "openat2" : "walk", (long)atomic_load(&f.flips), opened, refused, leaked);
	CHECK(leaked == 0);
	CHECK(atomic_load(&f.flips) > 0);
	/* The tree is back as it was. */
	CHECK(try_open(rfd, "sub/b.txt", SP_FILE, buf, sizeof buf, &e) == 0 &&
	      !strcmp(buf, "inside b"));
	unlink(f.b);
	close(rfd);
}

/* The swap done by hand, at the one moment that matters: after a client's
 * path was checked (sp_map, sp_lstat) and before it is opened. */
static void t_dir_swapped_after_check(void)
{
	char sub[512], held[512], buf[64], rel[SP_PATH_MAX], full[600];
	const char *roots[] = {root};
	int which;
	api_err e;
	struct stat st;
	int rfd = root_fd();
	REQUIRE(rfd >= 0);
	pathf(sub, sizeof sub, root, "sub");
	pathf(held, sizeof held, tmp, "sub.held");
	snprintf(full, sizeof full, "%s/sub/b.txt", root);
	REQUIRE(sp_map(roots, 1, full, &which, rel, sizeof rel, &e) == 0);
	REQUIRE(sp_lstat(rfd, rel, &st, &e) == 0 && S_ISREG(st.st_mode));
	REQUIRE(rename(sub, held) == 0 && symlink(out, sub) == 0);
	CHECK(try_open(rfd, rel, SP_FILE, buf, sizeof buf, &e) == API_EFORBIDDEN &&
	      !strstr(buf, "SECRET"));
	unlink(sub);
	REQUIRE(rename(held, sub) == 0);
	close(rfd);
}

/* A file swapped for a FIFO and back while it is opened: no open blocks
 * (the alarm would kill the test), and what opens is the regular file. */
static void t_race_fifo_swap(void)
{
	struct flipper f = {.fifo = 1};
	pthread_t th;
	char buf[64];
	api_err e;
	int rfd = root_fd();
	REQUIRE(rfd >= 0);
	pathf(f.a, sizeof f.a, root, "a.txt");
	pathf(f.b, sizeof f.b, root, "a.fifo");
	REQUIRE(pthread_create(&th, NULL, flip, &f) == 0);
	int opened = 0, refused = 0, wrong = 0;
	wait_flipping(&f);
	for (int i = 0; more_rounds(&f, i); i++) {
		int rc = try_open(rfd, "a.txt", SP_FILE, buf, sizeof buf, &e);
		if (rc == 0 && !strcmp(buf, "inside a"))
			opened++;
		else if (rc == 0 || rc < 0)
			wrong++;
		else
			refused++;
	}
	atomic_store(&f.stop, 1);
	pthread_join(th, NULL);
	printf("# %s: %ld swaps; %d opened, %d refused, %d wrong\n",
	       mode_openat2 ? "openat2" : "walk", (long)atomic_load(&f.flips), opened, refused, wrong);
	CHECK(wrong == 0 && atomic_load(&f.flips) > 0);
	unlink(f.b);
	close(rfd);
}

static void run_beneath(void)
{
	TAP_RUN(t_open_regular);
	TAP_RUN(t_symlink_last);
	TAP_RUN(t_symlink_middle);
	TAP_RUN(t_dotdot_and_absolute);
	TAP_RUN(t_fifo);
	TAP_RUN(t_socket);
	TAP_RUN(t_devices);
	TAP_RUN(t_list);
	TAP_RUN(t_dir_swapped_after_check);
	TAP_RUN(t_race_dir_swap);
	TAP_RUN(t_race_fifo_swap);
}

int main(void)
{
	/* A blocking open would hang forever: be killed instead (a failure). */
	alarm(120);
	setup();
	TAP_RUN(t_clean);
	TAP_RUN(t_map);
	TAP_RUN(t_map_no_oracle);
	int have = sp_have_openat2();
	printf("# openat2: %s\n", have ? "available" : "not available: the walk only");
	if (have) {
		set_mode(1);
		run_beneath();
	}
	set_mode(0);
	run_beneath();
	sp_set_openat2(1);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	if (tap_failed == 0 && system(cmd) != 0)
		printf("# could not remove %s\n", tmp);
	return tap_done();
}
