/*
 * clipd: the daemon. Start-up in order, a signal wait, shutdown in reverse.
 *
 * DESIGN: threads of the whole process (each module's own comment says more).
 * - main: start-up, then a wait for SIGTERM/SIGINT, then shutdown. Masks
 *   cannot steer those signals: OpenBLAS starts its threads in a library
 *   constructor, before main, with nothing blocked. So the handler (which may
 *   run on any thread) only writes a byte to a pipe that main reads; a signal
 *   during start-up or shutdown is noted the same way and never kills the
 *   process half-way through saving. SIGPIPE is ignored.
 * - HTTP: libmicrohttpd's listening thread and one thread per connection
 *   (http.c). They parse, validate, store uploads, and run request-time
 *   encodes on the encode pool (encode_pool.c, --encoders contexts).
 * - Workers: --workers background workers (worker.c) that drain the queue,
 *   each an encoder thread and a decoder thread that prepares the next
 *   batch meanwhile.
 * - Watcher: one thread for the --watch directories (watch.c), started
 *   after the workers and stopped before them.
 * - Migration: with --model other than the data directory's, one thread
 *   (migrate.c) embeds everything again with --model while the data
 *   directory's model serves, then swaps the served space (space.h) and
 *   retargets the workers. Started after the workers, stopped before them.
 * - EXIF backfill: while images stored before clipd read EXIF remain
 *   (exif_read = 0), one thread at nice 19 (exif_backfill.c) reads their
 *   blobs' headers a batch at a time. Started after the workers, stopped
 *   with the watcher.
 * - Matrix products: an encode call runs its products on the calling
 *   thread plus the model's one helper thread (model/threadpool.c; oneDNN layers
 *   split their rows between the two), or on OpenBLAS's threads for the
 *   f32 reference path. The machine's cores are split between the workers:
 *   threads per call = cores / workers (at least 1), so the background work
 *   alone never oversubscribes; a request-time encode competes with it,
 *   which is what we want for latency. OpenMP (FAISS; oneDNN, which we run
 *   one thread per call) is passive, see passive_openmp.
 * - Shared state: the app struct is written only here before threads start;
 *   every handle in it is thread-safe (store, vidx via collections, blobs,
 *   encode pool, workers). Written later: app.stopping (atomic) and app.sp
 *   (the served space, under app.space_mu, by a switch of models).
 *
 * Shutdown order: stop accepting and let requests in flight finish (30 s at
 * most), stop the watcher, the EXIF backfill and the migration (saving its target's
 * snapshots), stop the workers after their current batch, save both index
 * snapshots, close the store. Exit status 0; 2 for a refused start-up
 * (usage, or a data directory whose old model cannot be found).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "clock.h"
#include "config.h"
#include "exif_backfill.h"
#include "http.h"
#include "ingest.h"
#include "log.h"
#include "migrate.h"
#include "routes.h"
#include "space.h"
#include "watch.h"
#include "worker.h"

/* OpenBLAS's own control (model/gemm_int.h is private to the model). */

#define SHUTDOWN_GRACE_MS 30000

/* The self-pipe of the signal handler: see DESIGN. Written by the handler,
 * read by main; set up before any thread of ours exists. */
static int sig_pipe[2] = {-1, -1};
static volatile sig_atomic_t sig_last;

static void on_signal(int sig)
{
	int saved = errno;
	sig_last = sig;
	ssize_t w = write(sig_pipe[1], "x", 1);
	(void)w;
	errno = saved;
}

static int install_signals(void)
{
	struct sigaction sa;
	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
		return -1;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

/* Blocks until SIGTERM or SIGINT has arrived (maybe already). */
static int wait_signal(void)
{
	struct pollfd p = {.fd = sig_pipe[0], .events = POLLIN};
	char c;
	while (read(sig_pipe[0], &c, 1) != 1)
		poll(&p, 1, -1);
	return sig_last;
}

/* What the start-up found the data directory to be. */
enum start_kind {
	START_FAIL = -1,    /* an error: logged, exit 1 */
	START_REFUSE = -2,  /* the user's arguments cannot work: logged, exit 2 */
	START_NORMAL = 0,   /* the data directory's model is --model */
	START_MIGRATE = 1,  /* built with another model: serve it, migrate to --model */
};

static int kv_set3(store *st, const char *prefix, const space *sp, store_err *se)
{
	char key[64], dim[16];
	snprintf(dim, sizeof dim, "%d", sp->dim);
	snprintf(key, sizeof key, "%s.id", prefix);
	if (store_kv_set(st, key, sp->model_id, se) != STORE_OK)
		return -1;
	snprintf(key, sizeof key, "%s.dir", prefix);
	if (store_kv_set(st, key, sp->model_dir, se) != STORE_OK)
		return -1;
	snprintf(key, sizeof key, "%s.dim", prefix);
	return store_kv_set(st, key, dim, se) != STORE_OK ? -1 : 0;
}

/* Gives up a migration to model id recorded by an earlier run (the user
 * started with the old model again, or with a third one): its keys go, its
 * job is finished, its embeddings are marked for pruning. */
static int drop_migration(app *a, const char *id)
{
	store_err se;
	char *job = NULL, key[96];
	/* Its embeddings go in the background (store_embeddings_prune). */
	snprintf(key, sizeof key, "prune.%s", id);
	if (store_kv_set(a->st, key, "1", &se) != STORE_OK) {
		log_error("cannot give up the migration to model %s: %s", id, se.msg);
		return -1;
	}
	if (store_kv_get(a->st, "migration.job", &job, NULL) == STORE_OK) {
		store_job j;
		if (store_job_get(a->st, atoll(job), &j, NULL) == STORE_OK) {
			store_job_set_counts(a->st, j.id, j.total, j.done, j.failed, 1, NULL);
			store_job_clear(&j);
		}
	}
	free(job);
	static const char *const keys[] = {"migration.model.id", "migration.model.dir",
	                                   "migration.model.dim", "migration.job"};
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
		if (store_kv_delete(a->st, keys[i], &se) != STORE_OK) {
			log_error("cannot give up the migration to model %s: %s", id, se.msg);
			return -1;
		}
	log_info("gave up the unfinished migration to model %s (its embeddings are deleted in "
	         "the background)", id);
	return 0;
}

/* Records the model in a new data directory, or finds it is the data
 * directory's (START_NORMAL), or that the data directory was built with
 * another model, which it then loads into *old (START_MIGRATE; the
 * migration's keys recorded, its job in *job_id). cur is --model's space. */
static int check_model(app *a, space *cur, space **old, int64_t *job_id)
{
	store_err se;
	api_err ae;
	char *have = NULL, *have_dir = NULL, *target = NULL, *job = NULL;
	int rc = START_FAIL;
	*old = NULL;
	*job_id = 0;
	int krc = store_kv_get(a->st, "model.id", &have, &se);
	if (krc == STORE_ENOTFOUND) {
		if (kv_set3(a->st, "model", cur, &se)) {
			log_error("cannot record the model in the database: %s", se.msg);
			return START_FAIL;
		}
		log_info("new data directory: recorded model %s", cur->model_id);
		return START_NORMAL;
	}
	if (krc != STORE_OK) {
		log_error("cannot read the model of the data directory: %s", se.msg);
		return START_FAIL;
	}
	store_kv_get(a->st, "migration.model.id", &target, NULL);
	if (strcmp(have, cur->model_id) == 0) {
		/* Where the model is now, for a later switch of models (data
		 * directories of older versions lack it). */
		if (store_kv_get(a->st, "model.dir", &have_dir, NULL) != STORE_OK ||
		    strcmp(have_dir, cur->model_dir) != 0)
			if (kv_set3(a->st, "model", cur, &se))
				log_warn("cannot record the model's directory: %s", se.msg);
		rc = target && drop_migration(a, target) ? START_FAIL : START_NORMAL;
		goto out;
	}
	/* Another model built the data: it serves while --model's embeddings
	 * are made. */
	store_kv_get(a->st, "model.dir", &have_dir, NULL);
	const char *old_dir = a->cfg->old_model_dir ? a->cfg->old_model_dir : have_dir;
	if (!old_dir) {
		log_error("the data directory %s was built with model %s, and it does not record where "
		          "that model is. To switch it to --model %s (model %s), pass --old-model DIR, "
		          "the checkpoint directory of model %s: it serves searches while every item "
		          "is embedded again. Or start clipd with that model, or with a new --data "
		          "directory.",
		          a->cfg->data_dir, have, a->cfg->model_dir, cur->model_id, have);
		rc = START_REFUSE;
		goto out;
	}
	if (space_load(old_dir, a->cfg->precision, old, &ae)) {
		log_error("the data directory %s was built with model %s, which is needed to serve "
		          "searches while it switches to --model %s, but %s. Pass --old-model DIR, "
		          "the checkpoint directory of model %s (or start clipd with a new --data "
		          "directory).",
		          a->cfg->data_dir, have, a->cfg->model_dir, ae.msg, have);
		rc = START_REFUSE;
		goto out;
	}
	if (strcmp((*old)->model_id, have) != 0) {
		log_error("the data directory %s was built with model %s, but the old model's directory "
		          "%s%s holds model %s. Pass --old-model DIR, the checkpoint directory of model "
		          "%s, to switch to --model %s (model %s).",
		          a->cfg->data_dir, have, old_dir,
		          a->cfg->old_model_dir ? " (--old-model)" : " (recorded)", (*old)->model_id,
		          have, a->cfg->model_dir, cur->model_id);
		space_close(*old);
		*old = NULL;
		rc = START_REFUSE;
		goto out;
	}
	if (target && strcmp(target, cur->model_id) != 0 && drop_migration(a, target))
		goto out;
	/* The job of this migration when it resumes (also after a crash
	 * before its target was recorded). */
	if ((!target || strcmp(target, cur->model_id) == 0) &&
	    store_kv_get(a->st, "migration.job", &job, NULL) == STORE_OK)
		*job_id = atoll(job);
	if (!*job_id) {
		char num[32];
		if (store_job_create_counted(a->st, "model_migration", job_id, &se) != STORE_OK)
			goto store_fail;
		snprintf(num, sizeof num, "%lld", (long long)*job_id);
		if (store_kv_set(a->st, "migration.job", num, &se) != STORE_OK)
			goto store_fail;
	}
	/* The target first: once named, the store takes its embeddings. The
	 * old model's directory as found, so the next start finds it too. */
	if (kv_set3(a->st, "migration.model", cur, &se) ||
	    store_kv_set(a->st, "model.dir", (*old)->model_dir, &se) != STORE_OK)
		goto store_fail;
	log_info("the data directory was built with model %s (%s): it serves searches while every "
	         "item is embedded again with model %s (%s), job %lld",
	         have, (*old)->model_dir, cur->model_id, cur->model_dir, (long long)*job_id);
	rc = START_MIGRATE;
	goto out;
store_fail:
	log_error("cannot record the migration in the database: %s", se.msg);
	space_close(*old);
	*old = NULL;
out:
	free(have);
	free(have_dir);
	free(target);
	free(job);
	return rc;
}

/* DATA/index holds one directory per model (space_index_dir). Snapshots of
 * the single-model layout (DATA/index/images.vidx) are the data
 * directory's model's: they move into its directory. Directories of models
 * that are neither served nor migrated to (left by a crash during a switch
 * or a given-up migration) are removed. */
static void index_layout(const char *root, const char *serving, const char *target)
{
	static const char *const files[] = {"images.vidx", "texts.vidx"};
	char dir[4200], from[4400], to[4400];
	space_index_dir(root, serving, dir, sizeof dir);
	for (size_t i = 0; i < 2; i++) {
		struct stat st;
		snprintf(from, sizeof from, "%s/%s", root, files[i]);
		if (stat(from, &st) != 0)
			continue;
		snprintf(to, sizeof to, "%s/%s", dir, files[i]);
		if (g_mkdir_with_parents(dir, 0755) != 0 || rename(from, to) != 0)
			log_warn("cannot move %s into %s (rebuilt from the database): %s", files[i], dir,
			         strerror(errno));
		else
			log_info("moved the %s snapshot into %s", files[i], dir);
	}
	GDir *d = g_dir_open(root, 0, NULL);
	const char *name;
	while (d && (name = g_dir_read_name(d))) {
		if (strncmp(name, "clip-", 5) != 0 || !strcmp(name, serving) ||
		    (target && !strcmp(name, target)))
			continue;
		snprintf(dir, sizeof dir, "%s/%s", root, name);
		GDir *sub = g_dir_open(dir, 0, NULL);
		const char *f;
		while (sub && (f = g_dir_read_name(sub))) {
			snprintf(from, sizeof from, "%s/%s", dir, f);
			unlink(from);
		}
		if (sub)
			g_dir_close(sub);
		if (rmdir(dir) == 0)
			log_info("removed the index of model %s (no longer used)", name);
	}
	if (d)
		g_dir_close(d);
}

static int open_index(app *a, space *sp, const char *root)
{
	api_err ae;
	coll_index_opts io = {a->cfg->index_factory, (size_t)a->cfg->index_auto_at,
	                      a->cfg->index_nprobe, a->cfg->index_refine};
	if (space_open_index(sp, a->st, root, &io, &ae)) {
		if (ae.domain == ERR_VIDX && ae.code == VIDX_EMISMATCH)
			log_error("%s. The index snapshot belongs to another model: use a new --data "
			          "directory for this model.", ae.msg);
		else
			log_error("cannot open the indexes of model %s: %s", sp->model_id, ae.msg);
		return -1;
	}
	return 0;
}

static int make_dir(const char *path)
{
	if (g_mkdir_with_parents(path, 0755) != 0) {
		log_error("cannot create the directory %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* FAISS's OpenMP threads spin while they wait for work, and on a small
 * machine they take the cores OpenBLAS and the request threads need:
 * measured here, a 32-query exact search over 1M vectors went from 349 ms
 * to 1.77 s, a short text encode from 30 ms to 383 ms. libgomp reads
 * OMP_WAIT_POLICY when it is loaded, before main, so when the user has not
 * chosen a policy, set passive and run this program again. */
static void passive_openmp(char **argv)
{
	if (getenv("OMP_WAIT_POLICY"))
		return;
	setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
	execv("/proc/self/exe", argv);
	/* Could not re-execute: run on with the spinning default. */
}

/* The soft limit on open files is often 1024 while the hard one is far
 * higher: every connection holds a descriptor, so take what is allowed
 * (http_start fits --max-connections to the result). */
static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	passive_openmp(argv);
	raise_nofile();
	config cfg;
	char msg[512], path[4096];
	app a;
	space *cur = NULL, *old = NULL, *target = NULL;
	http_server *http = NULL;
	watcher *watch = NULL;
	exif_backfill *exif_bf = NULL;
	store_err se;
	clip_err ce;
	api_err ae;
	int status = 1;

	int prc = config_parse(&cfg, argc, argv, stdout, msg, sizeof msg);
	if (prc == 1)
		return 0;
	if (prc < 0) {
		fprintf(stderr, "clipd: %s\n", msg);
		config_free(&cfg);
		return 2;
	}
	log_set_level(cfg.log_level);

	if (install_signals() != 0) {
		log_error("cannot install the signal handlers: %s", strerror(errno));
		config_free(&cfg);
		return 1;
	}

	memset(&a, 0, sizeof a);
	pthread_mutex_init(&a.space_mu, NULL);
	pthread_cond_init(&a.space_cv, NULL);
	slots_init(&a.decodes, cfg.max_decodes);
	a.cfg = &cfg;
	a.started_ms = clock_ms();
	atomic_init(&a.stopping, 0);
	const char *secrets[] = {cfg.data_dir, cfg.model_dir, cfg.old_model_dir};
	api_err_set_secrets(secrets, cfg.old_model_dir ? 3 : 2);

	snprintf(path, sizeof path, "%s/index", cfg.data_dir);
	if (make_dir(cfg.data_dir) || make_dir(path))
		goto out;
	snprintf(path, sizeof path, "%s/clipd.db", cfg.data_dir);
	if (store_open(path, 0, &a.st, &se) != STORE_OK) {
		log_error("cannot open the database: %s", se.msg);
		goto out;
	}
	if (space_load(cfg.model_dir, cfg.precision, &cur, &ae)) {
		log_error("%s", ae.msg);
		goto out;
	}
	/* libvips with the model's settings before anything decodes, so that
	 * a libvips that cannot start stops clipd here, not every decode. */
	if (clip_images_init(&ce) != CLIP_OK) {
		log_error("cannot decode images: %s", ce.msg);
		goto out;
	}
	a.limits.max_pixels = cfg.max_pixels;
	/* Queries too, so that an image searched for is decoded as it was
	 * when ingested. */
	a.limits.fast_decode = cfg.fast_decode;
	int64_t mig_job = 0;
	int start = check_model(&a, cur, &old, &mig_job);
	if (start == START_REFUSE)
		status = 2;
	if (start < 0)
		goto out;
	/* Served: --model, or the data directory's while it migrates. */
	a.sp = start == START_MIGRATE ? old : cur;
	target = start == START_MIGRATE ? cur : NULL;
	old = cur = NULL;

	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int blas = cores > cfg.workers ? (int)(cores / cfg.workers) : 1;
	clip_set_threads(blas);

	snprintf(path, sizeof path, "%s/index", cfg.data_dir);
	index_layout(path, a.sp->model_id, target ? target->model_id : NULL);
	if (open_index(&a, a.sp, path) || (target && open_index(&a, target, path)))
		goto out;
	int64_t requeued = 0;
	if (store_work_requeue_claimed(a.st, &requeued, &se) != STORE_OK) {
		log_error("cannot recover the queue: %s", se.msg);
		goto out;
	}
	if (requeued)
		log_info("requeued %lld items that were in progress when the server stopped",
		         (long long)requeued);
	snprintf(path, sizeof path, "%s/blobs", cfg.data_dir);
	if (blobs_open(path, &a.blobs, &ae)) {
		log_error("%s", ae.msg);
		goto out;
	}
	if (ingest_roots_open(&a, &ae)) {
		log_error("%s", ae.msg);
		goto out;
	}
	if (space_open_encoders(a.sp, cfg.encoders, cfg.batch, &ae)) {
		log_error("cannot create the encoders: %s", ae.msg);
		goto out;
	}
	if (worker_pool_start(&a, a.sp, cfg.workers, cfg.batch, &a.workers, &ae)) {
		log_error("cannot start the workers: %s", ae.msg);
		goto out;
	}
	if (target) {
		if (migrate_start(&a, target, mig_job, &a.mig, &ae)) {
			log_error("cannot start the migration: %s", ae.msg);
			goto out;
		}
		target = NULL;
	}
	if (exif_backfill_start(&a, &exif_bf, &ae)) {
		log_error("cannot start the EXIF backfill: %s", ae.msg);
		goto out;
	}
	if (watch_start(&a, (const char *const *)cfg.watch_dirs, cfg.n_watch_dirs, cfg.rescan_s,
	                &watch, &ae)) {
		log_error("%s", ae.msg);
		goto out;
	}

	int64_t total = 0, ready = 0, texts = 0, depth = 0;
	store_image_count(a.st, &total, &ready, NULL);
	store_text_count(a.st, &texts, NULL);
	store_work_depth(a.st, &depth, NULL);
	log_info("clipd %s: model %s (%s, dim %d, image %d px)%s%s, data %s: %lld images (%lld ready), "
	         "%lld texts, %lld queued; index %s; precision %s; %d workers x %d threads, %d encoders; "
	         "fast decode %s; auth %s",
	         CLIPD_VERSION, a.sp->model_dir, a.sp->model_id, a.sp->dim,
	         clip_model_image_size(a.sp->model), a.mig ? ", migrating to " : "",
	         a.mig ? cfg.model_dir : "", cfg.data_dir, (long long)total, (long long)ready, (long long)texts,
	         (long long)depth, cfg.index_factory,
	         clip_precision_name(clip_model_precision(a.sp->model)), cfg.workers, blas, cfg.encoders,
	         cfg.fast_decode ? "on" : "off", cfg.api_key ? "on" : "off");

	if (http_start(&a, &http, &ae)) {
		log_error("%s", ae.msg);
		goto out;
	}
	log_info("ready in %lld ms", (long long)(clock_ms() - a.started_ms));

	int sig = wait_signal();
	log_info("received %s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	atomic_store(&a.stopping, 1);
	status = 0;
out:
	http_stop(http, SHUTDOWN_GRACE_MS);
	watch_stop(watch);
	exif_backfill_stop(exif_bf);
	/* Before the workers: a switch in progress retargets them. */
	migrate_stop(a.mig);
	worker_pool_stop(a.workers);
	if (a.sp && a.sp->coll && status == 0 && coll_save(a.sp->coll, &ae))
		log_error("snapshots not saved (they are rebuilt from the database at start-up)");
	space_close(a.sp);
	space_close(target);
	space_close(old);
	space_close(cur);
	slots_destroy(&a.decodes);
	ingest_roots_close(&a);
	blobs_close(a.blobs);
	store_close(a.st);
	pthread_mutex_destroy(&a.space_mu);
	pthread_cond_destroy(&a.space_cv);
	if (status == 0)
		log_info("stopped");
	config_free(&cfg);
	return status;
}
