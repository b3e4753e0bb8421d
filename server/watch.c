/*
 * watch.c: the --watch directories.
 *
 * DESIGN: the watcher thread.
 * - One thread, started after the workers and stopped before them. It alone
 *   owns everything in struct watcher past the settings: the inotify
 *   descriptor, the table of inotify watches (wd -> directory), and the
 *   table of pending paths. It is also the only writer of the store's
 *   watched_files table, so reading a record and then replacing it cannot
 *   race with another writer of that table. No lock of its own: it shares
 *   nothing but the thread-safe handles of the app (store, blobs,
 *   collections, workers) and the stop pipe.
 * - Locks it takes: blobs_lock(sha) around a transaction that may delete an
 *   image (as DELETE /v1/images does), alone; ingest_blob takes the same
 *   lock for the new content and releases it before returning. Never two at
 *   once.
 * - The loop: poll(inotify, stop pipe) with a timeout to the next due
 *   pending path or rescan. A rescan walks each directory (adding inotify
 *   watches as it goes) and compares every file with its record; inotify
 *   events name single paths (a directory moved in or out names its tree).
 *   Paths are strings (root + path below it) only as names: every look
 *   and open maps them back onto their root's descriptor and goes through
 *   safepath, so a stale or swapped name cannot lead outside the root.
 *   Either way the path goes into the pending table with what lstat saw; a
 *   pending path is taken once lstat has seen the same (existence, size,
 *   mtime) for DEBOUNCE_MS (GONE_MS for a path that went), then ingested,
 *   replaced or removed. The paths taken in one pass share one open job,
 *   sealed at the end of the pass.
 * - Stop: watch_stop writes to the pipe; the thread finishes the file in
 *   hand and exits. Pending paths are dropped: the next start's rescan
 *   finds them again.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "ingest.h"
#include "log.h"
#include "safepath.h"
#include "thumbs.h"
#include "space.h"
#include "watch.h"

#define DEBOUNCE_MS 1000
/* A file that went is taken later than one that came, so the new name of a
 * renamed file is always handled first and keeps the content's image. */
#define GONE_MS 2000
#define RETRY_MS 5000       /* a file that met a server-side error or a full queue */
#define MAX_DEPTH 32        /* as POST /v1/ingest {dir} */
#define MAX_ENTRIES 1000000 /* names per directory: more is not read */
#define DIR_MASK                                                                                   \
	(IN_CREATE | IN_CLOSE_WRITE | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE |        \
	 IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

/* What lstat saw of a pending path, and when it is to be looked at again. */
struct pending {
	int exists;          /* a regular file */
	int64_t size, mtime_ns;
	int64_t due_ms;
};

struct watcher {
	app *a;
	char **roots;        /* [nroots] realpath'd */
	int *root_fds;       /* [nroots] each opened once: every file is opened
	                      * beneath its root's descriptor (safepath.h) */
	struct stat *root_st; /* [nroots] what root_fds are, to tell a root moved
	                       * or replaced since */
	int nroots;
	int64_t rescan_ms;
	pthread_t th;
	int started;
	int stop_pipe[2];    /* written by watch_stop */
	/* The thread's own (see DESIGN). */
	int ino;             /* inotify descriptor, -1 without */
	int ino_full;        /* the watch limit was hit once: said so in the log */
	GHashTable *wds;     /* wd -> char *dir */
	GHashTable *pending; /* char *path -> struct pending */
	int64_t next_rescan_ms;
};

static int stopping(watcher *w)
{
	struct pollfd p = {.fd = w->stop_pipe[0], .events = POLLIN};
	return poll(&p, 1, 0) > 0 || atomic_load(&w->a->stopping);
}

static int64_t mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* ---- pending paths -------------------------------------------------------- */

/* Maps a watched path onto its root and the path below it (rel has
 * SP_PATH_MAX bytes). Every path here is built from a root, so -1 (under
 * none) means a path to leave alone. */
static int locate(watcher *w, const char *path, int *root, char *rel)
{
	api_err e;
	return sp_map((const char *const *)w->roots, w->nroots, path, root, rel, SP_PATH_MAX, &e) ? -1
	                                                                                          : 0;
}

/* Fills *p with what lstat sees now, due after the debounce: seen
 * beneath the root's descriptor, so a path through a symbolic link (a
 * directory swapped for one) is no file at all. */
static void look(watcher *w, const char *path, struct pending *p)
{
	struct stat st;
	char rel[SP_PATH_MAX];
	int root;
	api_err e;
	p->exists = locate(w, path, &root, rel) == 0 &&
	            sp_lstat(w->root_fds[root], rel, &st, &e) == 0 && S_ISREG(st.st_mode);
	p->size = p->exists ? (int64_t)st.st_size : 0;
	p->mtime_ns = p->exists ? mtime_ns(&st) : 0;
	p->due_ms = clock_ms() + (p->exists ? DEBOUNCE_MS : GONE_MS);
}

/* Puts path in the pending table, or restarts its wait when it changed
 * since the last look. */
static void pend(watcher *w, const char *path)
{
	struct pending now, *p = g_hash_table_lookup(w->pending, path);
	look(w, path, &now);
	if (p) {
		if (p->exists != now.exists || p->size != now.size || p->mtime_ns != now.mtime_ns)
			*p = now;
		return;
	}
	p = g_new(struct pending, 1);
	*p = now;
	g_hash_table_insert(w->pending, g_strdup(path), p);
}

/* Puts path back to be tried again after delay_ms. */
static void pend_later(watcher *w, const char *path, int delay_ms)
{
	struct pending *p = g_new(struct pending, 1);
	look(w, path, p);
	p->due_ms = clock_ms() + delay_ms;
	g_hash_table_replace(w->pending, g_strdup(path), p);
}

static int pend_record(void *ctx, const store_watched *r)
{
	pend(ctx, r->path);
	return 0;
}

/* Every recorded file under dir: a directory that went away. */
static void pend_recorded_under(watcher *w, const char *dir)
{
	store_err se;
	if (store_watch_list(w->a->st, dir, pend_record, w, &se) != STORE_OK)
		log_error("watch: reading the files recorded under a directory: %s", se.msg);
}

/* ---- the store side ------------------------------------------------------- */

/* Records path as image id (0: refused) and deletes the image it was,
 * when no watched file names that image any more. Returns 0 on success. */
static int record(watcher *w, const char *path, const struct pending *seen, int64_t old_id,
                  int64_t id)
{
	app *a = w->a;
	store_image old;
	store_err se;
	api_err ae;
	int64_t dropped = 0;
	int locked = 0;
	memset(&old, 0, sizeof old);
	if (old_id && old_id != id && store_image_get(a->st, old_id, &old, &se) == STORE_OK) {
		blobs_lock(a->blobs, old.sha256);
		locked = 1;
	}
	int rc = seen ? store_watch_set(a->st, path, seen->size, seen->mtime_ns, id, &dropped, &se)
	              : store_watch_remove(a->st, path, &dropped, &se);
	if (rc == STORE_ENOTFOUND && !seen)
		rc = STORE_OK; /* nothing recorded: nothing to forget */
	if (rc == STORE_OK && dropped && locked && blobs_remove(a->blobs, old.sha256, &ae))
		log_warn("watch: image %lld: %s", (long long)dropped, ae.msg);
	if (locked)
		blobs_unlock(a->blobs, old.sha256);
	if (rc == STORE_OK && dropped && locked)
		thumbs_remove(a, old.sha256); /* as DELETE /v1/images does */
	store_image_clear(&old);
	if (rc != STORE_OK) {
		log_error("watch: recording %s: %s", path, se.msg);
		return -1;
	}
	if (dropped) {
		log_info("watch: image %lld removed (%s %s)", (long long)dropped, path,
		         seen ? "changed" : "is gone");
		space_sync(a, STORE_IMAGE);
	}
	return 0;
}

/* What one pass did, for the log. */
struct pass {
	int ingested, refused, removed;
};

/* A file that has been stable: ingests it when it differs from its record. */
static void take_file(watcher *w, ingest_ctx *ic, const char *path, const struct pending *seen,
                      struct pass *ps)
{
	app *a = w->a;
	store_watched rec;
	store_err se;
	api_err e;
	int64_t old_id = 0, id = 0;
	int rc = store_watch_get(a->st, path, &rec, &se);
	if (rc == STORE_OK) {
		old_id = rec.image_id;
		int same = rec.size == seen->size && rec.mtime_ns == seen->mtime_ns;
		store_watched_clear(&rec);
		if (same)
			return;
	} else if (rc != STORE_ENOTFOUND) {
		log_error("watch: %s: %s", path, se.msg);
		pend_later(w, path, RETRY_MS);
		return;
	}
	if (ingest_queue_check(a, 1, &e)) {
		pend_later(w, path, RETRY_MS); /* full: the workers catch up first */
		return;
	}
	blob_writer *bw;
	int dup = 0, root;
	char rel[SP_PATH_MAX];
	if (locate(w, path, &root, rel))
		return;
	/* Opened beneath the root's descriptor, whatever happened to the
	 * directories on the way since the event or the rescan named it; and
	 * shown to clients as its path under the root. */
	rc = ingest_read_at(a, w->root_fds[root], rel, &bw, &e);
	if (rc == 0)
		rc = ingest_blob(ic, bw, rel, NULL, &id, &dup, NULL, &e);
	if (rc && e.domain == ERR_API && e.code == API_ENOTFOUND) {
		pend(w, path); /* gone meanwhile: handled as such once stable */
		return;
	}
	if (rc && api_err_status(&e, NULL) >= 500) {
		log_error("watch: %s: %s (retried later)", path, e.msg);
		pend_later(w, path, RETRY_MS);
		return;
	}
	if (rc && e.domain == ERR_API && e.code == API_EFORBIDDEN) {
		/* Unreadable (permissions): not recorded, so a chmod or the next
		 * rescan brings it in. */
		log_warn("watch: %s: %s", path, e.msg);
		return;
	}
	if (rc) {
		/* Refused: say why in the job, and leave the file alone until it
		 * changes. */
		log_info("watch: %s refused: %s", path, e.msg);
		api_err je;
		if (ingest_reject(ic, rel, e.msg, &je))
			log_error("watch: recording the refusal of %s: %s", path, je.msg);
		id = 0;
		ps->refused++;
	} else {
		log_debug("watch: %s is image %lld%s", path, (long long)id, dup ? " (known content)" : "");
		ps->ingested++;
	}
	if (record(w, path, seen, old_id, id))
		pend_later(w, path, RETRY_MS);
}

/* A file that has stayed away: forgets it and its image. */
static void take_gone(watcher *w, const char *path, struct pass *ps)
{
	store_watched rec;
	store_err se;
	int rc = store_watch_get(w->a->st, path, &rec, &se);
	if (rc == STORE_ENOTFOUND)
		return;
	if (rc != STORE_OK) {
		log_error("watch: %s: %s", path, se.msg);
		return;
	}
	int64_t old_id = rec.image_id;
	store_watched_clear(&rec);
	if (record(w, path, NULL, old_id, 0) == 0)
		ps->removed++;
}

static gint cmp_str(gconstpointer a, gconstpointer b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Takes every pending path that has been stable for DEBOUNCE_MS. */
static void take_due(watcher *w)
{
	int64_t now = clock_ms();
	GHashTableIter it;
	gpointer k, v;
	GPtrArray *due = g_ptr_array_new_with_free_func(g_free);
	g_hash_table_iter_init(&it, w->pending);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		struct pending *p = v, again;
		if (p->due_ms > now)
			continue;
		look(w, k, &again);
		if (again.exists != p->exists || again.size != p->size || again.mtime_ns != p->mtime_ns) {
			*p = again; /* still changing: wait again */
			continue;
		}
		g_ptr_array_add(due, g_strdup(k));
	}
	if (due->len == 0) {
		g_ptr_array_free(due, TRUE);
		return;
	}
	g_ptr_array_sort(due, cmp_str);
	ingest_ctx ic = {.a = w->a, .job_kind = "watch", .open = 1, .watcher = 1};
	struct pass ps = {0};
	/* Files that are there first, then those that went: a file renamed
	 * (or a copy moved over) finds its content's image still there and
	 * keeps it, rather than having it deleted and made again. */
	for (int there = 1; there >= 0; there--) {
		for (guint i = 0; i < due->len && !stopping(w); i++) {
			const char *path = g_ptr_array_index(due, i);
			struct pending *p = g_hash_table_lookup(w->pending, path);
			if (!p || p->due_ms > now || p->exists != there)
				continue;
			struct pending seen = *p;
			g_hash_table_remove(w->pending, path);
			if (seen.exists)
				take_file(w, &ic, path, &seen, &ps);
			else
				take_gone(w, path, &ps);
		}
	}
	api_err e;
	if (ingest_end(&ic, &e))
		log_error("watch: sealing job %lld: %s", (long long)ic.job_id, e.msg);
	if (ic.job_id)
		log_info("watch: %d files ingested, %d refused, %d removed (job %lld)", ps.ingested,
		         ps.refused, ps.removed, (long long)ic.job_id);
	else if (ps.removed)
		log_info("watch: %d files removed", ps.removed);
	g_ptr_array_free(due, TRUE);
}

/* ---- inotify and rescans -------------------------------------------------- */

/* Watches the directory open at dfd (named dir here): through its
 * descriptor, so the watch is on the directory that was walked even if
 * dir has been swapped meanwhile. */
static void add_watch(watcher *w, int dfd, const char *dir)
{
	char self[64];
	if (w->ino < 0)
		return;
	snprintf(self, sizeof self, "/proc/self/fd/%d", dfd);
	int wd = inotify_add_watch(w->ino, self, DIR_MASK);
	if (wd < 0 && errno == ENOENT) /* no /proc */
		wd = inotify_add_watch(w->ino, dir, DIR_MASK | IN_DONT_FOLLOW);
	if (wd < 0) {
		if (!w->ino_full)
			log_warn("watch: cannot watch %s for changes (%s): changes there show at the next "
			         "rescan", dir, strerror(errno));
		w->ino_full = 1;
		return;
	}
	g_hash_table_replace(w->wds, GINT_TO_POINTER(wd), g_strdup(dir));
}

/* Forgets the watches of dir and of every directory under it (by name):
 * a directory moved away must not go on naming paths under its old name. */
static void drop_watches_under(watcher *w, const char *dir)
{
	GHashTableIter it;
	gpointer k, v;
	size_t n = strlen(dir);
	g_hash_table_iter_init(&it, w->wds);
	while (g_hash_table_iter_next(&it, &k, &v)) {
		const char *d = v;
		if (strncmp(d, dir, n) == 0 && (d[n] == 0 || d[n] == '/')) {
			inotify_rm_watch(w->ino, GPOINTER_TO_INT(k));
			g_hash_table_iter_remove(&it);
		}
	}
}

/* Walks the directory open at dfd, named dir (its root's path and the path
 * below it): watches every directory, and pends every file that differs
 * from its record in recs (removing what it sees from recs). With recs
 * NULL every file is pended. Directories are opened beneath the one they
 * are listed in, never through a link. Returns non-zero when some
 * directory could not be read. */
static int walk(watcher *w, int dfd, const char *dir, int depth, GHashTable *recs)
{
	char **names;
	size_t ne;
	api_err e;
	int bad = 0;
	if (sp_list(dfd, MAX_ENTRIES, &names, &ne, &e)) {
		log_warn("watch: cannot read %s: %s", dir, e.msg);
		return -1;
	}
	add_watch(w, dfd, dir);
	for (size_t i = 0; i < ne; i++) {
		const char *name = names[i];
		char *path = NULL;
		struct stat st;
		if (name[0] == '.' || stopping(w) || asprintf(&path, "%s/%s", dir, name) < 0) {
			path = NULL;
			continue;
		}
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
			free(path);
			continue;
		}
		int cfd;
		if (S_ISDIR(st.st_mode) && depth < MAX_DEPTH) {
			if (sp_open(dfd, name, SP_DIR, &cfd, NULL, &e)) {
				log_warn("watch: cannot read %s: %s", path, e.msg);
				bad = -1;
			} else {
				bad |= walk(w, cfd, path, depth + 1, recs);
				close(cfd);
			}
		} else if (S_ISREG(st.st_mode)) {
			store_watched *r = recs ? g_hash_table_lookup(recs, path) : NULL;
			if (!r || r->size != (int64_t)st.st_size || r->mtime_ns != mtime_ns(&st))
				pend(w, path);
			if (recs)
				g_hash_table_remove(recs, path);
		}
		free(path);
	}
	sp_list_free(names, ne);
	return bad;
}

/* Walks the directory at path (under a root), opened beneath the root. */
static int walk_path(watcher *w, const char *path, int depth, GHashTable *recs)
{
	char rel[SP_PATH_MAX];
	int root, dfd, bad;
	api_err e;
	if (locate(w, path, &root, rel))
		return -1;
	if (sp_open(w->root_fds[root], rel, SP_DIR, &dfd, NULL, &e)) {
		log_warn("watch: cannot read %s: %s", path, e.msg);
		return -1;
	}
	bad = walk(w, dfd, path, depth, recs);
	close(dfd);
	return bad;
}

/* Whether root i is still what was opened at start: a root moved away,
 * removed or replaced is not walked (nothing under it is taken for
 * deleted) until it is back. */
static int root_in_place(watcher *w, int i)
{
	struct stat now;
	return stat(w->roots[i], &now) == 0 && now.st_dev == w->root_st[i].st_dev &&
	       now.st_ino == w->root_st[i].st_ino;
}

static void free_record(gpointer p)
{
	store_watched *r = p;
	store_watched_clear(r);
	g_free(r);
}

static int load_record(void *ctx, const store_watched *r)
{
	store_watched *c = g_new0(store_watched, 1);
	*c = *r;
	if (!(c->path = strdup(r->path))) {
		g_free(c);
		return STORE_ENOMEM;
	}
	g_hash_table_insert(ctx, c->path, c);
	return 0;
}

/* The ground truth: compares every watched directory with the records. */
static void rescan(watcher *w)
{
	int64_t t0 = clock_ms();
	guint before = g_hash_table_size(w->pending);
	for (int i = 0; i < w->nroots && !stopping(w); i++) {
		const char *root = w->roots[i];
		store_err se = {.msg = "out of memory"}; /* what stops load_record */
		/* Keys are owned by the values (freed with them). */
		GHashTable *recs = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, free_record);
		if (store_watch_list(w->a->st, strcmp(root, "/") ? root : "", load_record, recs, &se) !=
		    STORE_OK) {
			log_error("watch: reading the records of %s: %s", root, se.msg);
			g_hash_table_destroy(recs);
			continue;
		}
		int bad;
		if (!root_in_place(w, i)) {
			log_warn("watch: %s was moved, removed or replaced since clipd started: it is not "
			         "scanned (and nothing under it taken for deleted) until it is back",
			         root);
			bad = -1;
		} else {
			bad = walk_path(w, root, 0, recs);
		}
		if (bad || stopping(w)) {
			if (bad && g_hash_table_size(recs))
				log_warn("watch: %s could not be read in full: no file under it is taken for "
				         "deleted this time", root);
		} else {
			/* Recorded but not seen: gone, once they stay gone. */
			GHashTableIter it;
			gpointer k;
			g_hash_table_iter_init(&it, recs);
			while (g_hash_table_iter_next(&it, &k, NULL))
				pend(w, k);
		}
		g_hash_table_destroy(recs);
	}
	log_debug("watch: rescan in %lld ms, %u paths pending", (long long)(clock_ms() - t0),
	          g_hash_table_size(w->pending) - before);
}

static void read_events(watcher *w)
{
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t len = read(w->ino, buf, sizeof buf);
		if (len <= 0)
			return; /* EAGAIN: all read */
		for (char *p = buf; p < buf + len;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			p += sizeof *ev + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				w->next_rescan_ms = clock_ms(); /* events were lost */
				continue;
			}
			if (ev->mask & IN_IGNORED) {
				g_hash_table_remove(w->wds, GINT_TO_POINTER(ev->wd));
				continue;
			}
			const char *dir = g_hash_table_lookup(w->wds, GINT_TO_POINTER(ev->wd));
			if (dir && (ev->mask & IN_MOVE_SELF)) {
				/* A watched directory was moved, and its parent did not say
				 * so (a root, or a parent unwatched): its name here is stale.
				 * Drop it; a rescan soon finds what is where now. */
				drop_watches_under(w, dir);
				if (w->next_rescan_ms > clock_ms() + DEBOUNCE_MS)
					w->next_rescan_ms = clock_ms() + DEBOUNCE_MS;
				continue;
			}
			if (!dir || !ev->len || ev->name[0] == '.')
				continue; /* other events about the directory itself: the rescan decides */
			char *path = g_strdup_printf("%s/%s", dir, ev->name);
			if (ev->mask & IN_ISDIR) {
				if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
					walk_path(w, path, 1, NULL);
				} else if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
					/* Moved out (or away within the tree): its watches go
					 * with its old name, and its files are looked at again
					 * (gone, unless they are back). */
					if (ev->mask & IN_MOVED_FROM)
						drop_watches_under(w, path);
					pend_recorded_under(w, path);
				}
			} else {
				pend(w, path);
			}
			g_free(path);
		}
	}
}

static void *watch_main(void *arg)
{
	watcher *w = arg;
	w->next_rescan_ms = clock_ms();
	while (!stopping(w)) {
		int64_t now = clock_ms();
		if (now >= w->next_rescan_ms) {
			rescan(w);
			w->next_rescan_ms = clock_ms() + w->rescan_ms;
		}
		take_due(w);

		int64_t wake = w->next_rescan_ms;
		GHashTableIter it;
		gpointer v;
		g_hash_table_iter_init(&it, w->pending);
		while (g_hash_table_iter_next(&it, NULL, &v))
			if (((struct pending *)v)->due_ms < wake)
				wake = ((struct pending *)v)->due_ms;
		int64_t left = wake - clock_ms();
		struct pollfd p[2] = {{.fd = w->stop_pipe[0], .events = POLLIN},
		                      {.fd = w->ino, .events = POLLIN}};
		int np = poll(p, w->ino >= 0 ? 2 : 1, left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left);
		if (np > 0 && (p[1].revents & POLLIN))
			read_events(w);
	}
	return NULL;
}

/* ---- start and stop ------------------------------------------------------- */

int watch_start(app *a, const char *const *dirs, int n, int rescan_s, watcher **out,
                api_err *err)
{
	int rc = 0;
	*out = NULL;
	if (n <= 0)
		return 0;
	if (rescan_s < 1)
		return api_fail(err, API_EBADREQ, "--rescan-seconds must be at least 1");
	watcher *w = calloc(1, sizeof *w);
	if (!w || !(w->roots = calloc((size_t)n, sizeof *w->roots))) {
		free(w);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	w->a = a;
	w->ino = -1;
	w->stop_pipe[0] = w->stop_pipe[1] = -1;
	w->rescan_ms = (int64_t)rescan_s * 1000;
	w->wds = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
	w->pending = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
	if (!(w->root_fds = malloc((size_t)n * sizeof *w->root_fds)) ||
	    !(w->root_st = calloc((size_t)n, sizeof *w->root_st))) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		struct stat st;
		char *real = realpath(dirs[i], NULL);
		const char *why = NULL;
		if (!real || stat(real, &st) != 0)
			why = strerror(errno);
		else if (!S_ISDIR(st.st_mode))
			why = "not a directory";
		else if (access(real, R_OK | X_OK) != 0)
			why = "the directory is not readable by this user";
		api_err e;
		int fd = -1;
		if (!why && sp_root_open(real, &fd, &e))
			why = e.msg;
		else if (!why && fstat(fd, &w->root_st[w->nroots]) != 0)
			why = strerror(errno);
		if (why && fd >= 0)
			close(fd);
		if (why) {
			rc = api_fail(err, API_EFORBIDDEN, "--watch %s: %s", dirs[i], why);
			free(real);
			goto out;
		}
		w->root_fds[w->nroots] = fd;
		w->roots[w->nroots++] = real;
	}
	if (pipe2(w->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		rc = api_fail(err, API_EIO, "cannot create a pipe: %s", strerror(errno));
		goto out;
	}
	w->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->ino < 0)
		log_warn("watch: inotify is not available (%s): changes show at each rescan, every %d s",
		         strerror(errno), rescan_s);
	if (pthread_create(&w->th, NULL, watch_main, w) != 0) {
		rc = api_fail(err, API_EINTERNAL, "cannot start the watcher thread");
		goto out;
	}
	w->started = 1;
	for (int i = 0; i < w->nroots; i++)
		log_info("watching %s (rescan every %d s)", w->roots[i], rescan_s);
	*out = w;
	w = NULL;
out:
	watch_stop(w);
	return rc;
}

void watch_stop(watcher *w)
{
	if (!w)
		return;
	if (w->started) {
		ssize_t r = write(w->stop_pipe[1], "x", 1);
		(void)r;
		pthread_join(w->th, NULL);
	}
	for (int i = 0; i < w->nroots; i++) {
		free(w->roots[i]);
		close(w->root_fds[i]);
	}
	free(w->roots);
	free(w->root_fds);
	free(w->root_st);
	if (w->ino >= 0)
		close(w->ino);
	for (int i = 0; i < 2; i++)
		if (w->stop_pipe[i] >= 0)
			close(w->stop_pipe[i]);
	g_hash_table_destroy(w->wds);
	g_hash_table_destroy(w->pending);
	free(w);
}
