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
 *   encode pool, workers). The only flag written later is app.stopping (atomic).
 *
 * Shutdown order: stop accepting and let requests in flight finish (30 s at
 * most), stop the workers after their current batch, save both index
 * snapshots, close the store. Exit status 0.
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
#include "fingerprint.h"
#include "http.h"
#include "ingest.h"
#include "log.h"
#include "routes.h"
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

/* Records the model in a new data directory, or refuses one built with
 * another model (logging how to re-embed). Returns 0 to go on. */
static int check_model(app *a)
{
	store_err se;
	char *have = NULL, *have_dir = NULL;
	int rc = store_kv_get(a->st, "model.id", &have, &se);
	if (rc == STORE_ENOTFOUND) {
		char dim[16];
		snprintf(dim, sizeof dim, "%d", a->dim);
		if (store_kv_set(a->st, "model.id", a->model_id, &se) != STORE_OK ||
		    store_kv_set(a->st, "model.dir", a->cfg->model_dir, &se) != STORE_OK ||
		    store_kv_set(a->st, "model.dim", dim, &se) != STORE_OK) {
			log_error("cannot record the model in the database: %s", se.msg);
			return -1;
		}
		log_info("new data directory: recorded model %s", a->model_id);
		return 0;
	}
	if (rc != STORE_OK) {
		log_error("cannot read the model of the data directory: %s", se.msg);
		return -1;
	}
	rc = 0;
	if (strcmp(have, a->model_id) != 0) {
		store_kv_get(a->st, "model.dir", &have_dir, NULL);
		log_error("the data directory %s was built with model %s (from %s), but --model %s is "
		          "model %s. Embeddings of different models cannot be compared. To use this "
		          "model, start clipd with a new --data directory and ingest the images again "
		          "(POST /v1/ingest); or start it with the original model.",
		          a->cfg->data_dir, have, have_dir ? have_dir : "an unknown directory",
		          a->cfg->model_dir, a->model_id);
		rc = -1;
	}
	free(have);
	free(have_dir);
	return rc;
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
	http_server *http = NULL;
	watcher *watch = NULL;
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
	slots_init(&a.decodes, cfg.max_decodes);
	a.cfg = &cfg;
	a.started_ms = clock_ms();
	atomic_init(&a.stopping, 0);
	const char *secrets[] = {cfg.data_dir, cfg.model_dir};
	api_err_set_secrets(secrets, 2);

	snprintf(path, sizeof path, "%s/index", cfg.data_dir);
	if (make_dir(cfg.data_dir) || make_dir(path))
		goto out;
	snprintf(path, sizeof path, "%s/clipd.db", cfg.data_dir);
	if (store_open(path, 0, &a.st, &se) != STORE_OK) {
		log_error("cannot open the database: %s", se.msg);
		goto out;
	}
	clip_options mo = {cfg.precision};
	if (clip_model_open_opts(cfg.model_dir, &mo, &a.model, &ce) != CLIP_OK) {
		log_error("cannot load the model from %s: %s", cfg.model_dir, ce.msg);
		goto out;
	}
	/* libvips with the model's settings before anything decodes, so that
	 * a libvips that cannot start stops clipd here, not every decode. */
	if (clip_images_init(&ce) != CLIP_OK) {
		log_error("cannot decode images: %s", ce.msg);
		goto out;
	}
	if (fingerprint_model(cfg.model_dir, a.model_id, sizeof a.model_id, &ae)) {
		log_error("cannot fingerprint the model: %s", ae.msg);
		goto out;
	}
	a.dim = clip_model_dim(a.model);
	a.limits.max_pixels = cfg.max_pixels;
	/* Queries too, so that an image searched for is decoded as it was
	 * when ingested. */
	a.limits.fast_decode = cfg.fast_decode;
	if (check_model(&a))
		goto out;

	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	int blas = cores > cfg.workers ? (int)(cores / cfg.workers) : 1;
	clip_set_threads(blas);

	snprintf(path, sizeof path, "%s/index", cfg.data_dir);
	if (coll_open(a.st, path, cfg.index_factory, a.dim, a.model_id, &a.coll, &ae)) {
		if (ae.domain == ERR_VIDX && ae.code == VIDX_EMISMATCH)
			log_error("%s. The index snapshot belongs to another model: use a new --data "
			          "directory for this model.", ae.msg);
		else
			log_error("cannot open the indexes: %s", ae.msg);
		goto out;
	}
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
	if (encode_pool_open(a.model, cfg.encoders, cfg.batch, &a.enc, &ae)) {
		log_error("cannot create the encoders: %s", ae.msg);
		goto out;
	}
	if (worker_pool_start(&a, cfg.workers, cfg.batch, &a.workers, &ae)) {
		log_error("cannot start the workers: %s", ae.msg);
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
	log_info("clipd %s: model %s (%s, dim %d, image %d px), data %s: %lld images (%lld ready), "
	         "%lld texts, %lld queued; index %s; precision %s; %d workers x %d threads, %d encoders; "
	         "fast decode %s; auth %s",
	         CLIPD_VERSION, cfg.model_dir, a.model_id, a.dim, clip_model_image_size(a.model),
	         cfg.data_dir, (long long)total, (long long)ready, (long long)texts,
	         (long long)depth, cfg.index_factory,
	         clip_precision_name(clip_model_precision(a.model)), cfg.workers, blas, cfg.encoders,
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
	worker_pool_stop(a.workers);
	if (a.coll && status == 0 && coll_save(a.coll, &ae))
		log_error("snapshots not saved (they are rebuilt from the database at start-up)");
	coll_close(a.coll);
	encode_pool_close(a.enc);
	slots_destroy(&a.decodes);
	ingest_roots_close(&a);
	blobs_close(a.blobs);
	clip_model_close(a.model);
	store_close(a.st);
	if (status == 0)
		log_info("stopped");
	config_free(&cfg);
	return status;
}
