/*
 * duplicates.c: computing and caching near-duplicate groups (duplicates.h).
 *
 * DESIGN: one computation at a time, and the cache.
 * The state below is process-wide (a grouping is worth sharing between
 * requests and costs seconds on 100k images): `mu` guards `cache`, `used`,
 * `computing` and its key, and every entry's `refs`; `cv` wakes requests
 * waiting for the computation of their key. The computation itself runs
 * without mu (it reads the store and searches FAISS for seconds); mu is a
 * leaf, never held while calling into the store, the index or FAISS.
 * Entries are freed when evicted (least recently used of DUPS_CACHE) and
 * unheld, or at exit never (the process ends).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "duplicates.h"
#include "log.h"

/* Vectors read from the store per vidx_add or search call. */
#define CHUNK 1024
/* A pair counts when its float32 inner product is >= threshold - SLACK:
 * the inner product of an embedding with an identical one is 1 only up to
 * rounding (about 1e-6 for 512 dimensions), and threshold 1 must find
 * identical embeddings. */
#define SLACK 1e-4
/* What a walk's callback returns to stop it: no store_code is negative. */
#define WALK_STOPPED (-1)

struct dup_groups {
	char model_id[32];
	uint64_t seq;             /* the image index's sequence when computed */
	double threshold;
	vidx_groups *g;
	size_t images;
	int64_t compute_ms;
	int refs;                 /* holders besides the cache; under mu */
	int cached;               /* in cache[]; under mu */
	uint64_t used;            /* last use, for eviction; under mu */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static dup_groups *cache[DUPS_CACHE];  /* under mu */
static uint64_t use_clock;             /* under mu */
static int computing;                  /* under mu */
static char computing_model[32];       /* under mu */
static uint64_t computing_seq;         /* under mu */
static double computing_threshold;     /* under mu */

int dups_check_threshold(double t, const char *field, api_err *err)
{
	if (!isfinite(t) || t < DUPS_MIN_THRESHOLD || t > 1)
		return api_fail(err, API_EBADREQ, "'%s' must be a number from %g to 1", field,
		                DUPS_MIN_THRESHOLD);
	return 0;
}

static void free_groups(dup_groups *d)
{
	if (!d)
		return;
	vidx_groups_free(d->g);
	free(d);
}

/* ---- computing ----------------------------------------------------------- */

struct walk {
	vidx *v;
	vidx_groups *g;           /* NULL in the first pass (adding) */
	int dim;
	float *x;                 /* [CHUNK][dim] */
	int64_t *ids;             /* [CHUNK] */
	size_t n, total;
	uint64_t last;            /* first pass: the last sequence read; second: where to stop */
	vidx_err verr;
	int failed;
};

static int flush(struct walk *w)
{
	int rc = w->g ? vidx_groups_search(w->g, w->v, w->n, w->x, w->ids, DUPS_K, &w->verr)
	              : vidx_add(w->v, w->n, w->x, w->ids, &w->verr);
	w->total += w->n;
	w->n = 0;
	return rc;
}

static int on_vector(void *p, const store_change *ch)
{
	struct walk *w = p;
	if (w->g && ch->seq > w->last)
		return WALK_STOPPED; /* written after the first pass: not in the index */
	if (!w->g)
		w->last = ch->seq;
	if (!ch->vec)
		return 0; /* a removal: the item has no embedding any more */
	if (ch->dim != w->dim) {
		snprintf(w->verr.msg, sizeof w->verr.msg,
		         "the store's embedding of image %lld has dimension %d, the model %d",
		         (long long)ch->item_id, ch->dim, w->dim);
		w->verr.code = VIDX_EMISMATCH;
		w->failed = 1;
		return WALK_STOPPED;
	}
	memcpy(w->x + w->n * (size_t)w->dim, ch->vec, (size_t)w->dim * sizeof(float));
	w->ids[w->n++] = ch->item_id;
	if (w->n == CHUNK && flush(w) != VIDX_OK) {
		w->failed = 1;
		return WALK_STOPPED;
	}
	return 0;
}

/* One pass over the store's image embeddings of sp's model. */
static int walk(app *a, space *sp, struct walk *w, api_err *err)
{
	store_err se;
	int rc = store_changes_after(a->st, STORE_IMAGE, sp->model_id, 0, on_vector, w, &se);
	if (w->failed)
		return api_from_vidx(err, &w->verr);
	if (rc != STORE_OK && rc != WALK_STOPPED)
		return api_from_store(err, &se);
	if (w->n && flush(w) != VIDX_OK)
		return api_from_vidx(err, &w->verr);
	return 0;
}

static int compute(app *a, space *sp, double t, uint64_t seq, dup_groups **out, api_err *err)
{
	int64_t t0 = clock_ms();
	coll_stats cs;
	vidx_err verr;
	int rc = 0;
	struct walk w = {.dim = sp->dim};
	dup_groups *d = calloc(1, sizeof *d);

	*out = NULL;
	coll_get_stats(sp->coll, STORE_IMAGE, &cs);
	w.x = malloc((size_t)CHUNK * (size_t)sp->dim * sizeof *w.x);
	w.ids = malloc(CHUNK * sizeof *w.ids);
	if (!d || !w.x || !w.ids) {
		rc = api_fail(err, API_ENOMEM, "out of memory");
		goto out;
	}
	if (vidx_groups_index(cs.count, sp->dim, &w.v, &verr) != VIDX_OK ||
	    vidx_groups_new((float)(t - SLACK), &d->g, &verr) != VIDX_OK) {
		rc = api_from_vidx(err, &verr);
		goto out;
	}
	/* First pass: every vector into the index; second: each searched. */
	if ((rc = walk(a, sp, &w, err)))
		goto out;
	int64_t t1 = clock_ms();
	w.g = d->g;
	w.total = 0;
	if ((rc = walk(a, sp, &w, err)))
		goto out;
	if (vidx_groups_finish(d->g, &verr) != VIDX_OK) {
		rc = api_from_vidx(err, &verr);
		goto out;
	}
	snprintf(d->model_id, sizeof d->model_id, "%s", sp->model_id);
	d->seq = seq;
	d->threshold = t;
	d->images = w.total;
	d->compute_ms = clock_ms() - t0;
	log_info("duplicates at %.4f: %zu groups of %zu images among %zu, %lld ms (adding %lld, "
	         "searching %lld; %s)", t, vidx_groups_count(d->g), vidx_groups_grouped(d->g),
	         d->images, (long long)d->compute_ms, (long long)(t1 - t0),
	         (long long)(clock_ms() - t1), vidx_factory(w.v));
	*out = d;
	d = NULL;
out:
	vidx_close(w.v);
	free(w.x);
	free(w.ids);
	free_groups(d);
	return rc;
}

/* ---- the cache ----------------------------------------------------------- */

static dup_groups *cached_locked(const char *model, uint64_t seq, double t)
{
	for (int i = 0; i < DUPS_CACHE; i++)
		if (cache[i] && cache[i]->seq == seq && cache[i]->threshold == t &&
		    !strcmp(cache[i]->model_id, model))
			return cache[i];
	return NULL;
}

/* Puts d in the cache, evicting the least recently used entry (freed at
 * once when nobody holds it, else by its last dups_release). */
static void insert_locked(dup_groups *d)
{
	int slot = 0;
	for (int i = 0; i < DUPS_CACHE; i++) {
		if (!cache[i]) {
			slot = i;
			break;
		}
		if (cache[i]->used < cache[slot]->used)
			slot = i;
	}
	if (cache[slot]) {
		cache[slot]->cached = 0;
		if (cache[slot]->refs == 0)
			free_groups(cache[slot]);
	}
	cache[slot] = d;
	d->cached = 1;
}

int dups_get(app *a, space *sp, double t, dup_groups **out, api_err *err)
{
	coll_stats cs;
	*out = NULL;
	if (dups_check_threshold(t, "threshold", err))
		return API_EBADREQ;
	coll_get_stats(sp->coll, STORE_IMAGE, &cs);
	pthread_mutex_lock(&mu);
	for (;;) {
		dup_groups *d = cached_locked(sp->model_id, cs.seq, t);
		if (d) {
			d->refs++;
			d->used = ++use_clock;
			pthread_mutex_unlock(&mu);
			*out = d;
			return 0;
		}
		if (!computing)
			break;
		if (computing_seq != cs.seq || computing_threshold != t ||
		    strcmp(computing_model, sp->model_id)) {
			pthread_mutex_unlock(&mu);
			return api_fail(err, API_EQUEUEFULL,
			                "duplicate detection is running for another threshold or "
			                "set of images: retry later");
		}
		pthread_cond_wait(&cv, &mu);
	}
	computing = 1;
	snprintf(computing_model, sizeof computing_model, "%s", sp->model_id);
	computing_seq = cs.seq;
	computing_threshold = t;
	pthread_mutex_unlock(&mu);

	dup_groups *d;
	int rc = compute(a, sp, t, cs.seq, &d, err);

	pthread_mutex_lock(&mu);
	computing = 0;
	if (rc == 0) {
		d->refs = 1;
		d->used = ++use_clock;
		insert_locked(d);
		*out = d;
	}
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	return rc;
}

void dups_release(dup_groups *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&mu);
	int gone = --d->refs == 0 && !d->cached;
	pthread_mutex_unlock(&mu);
	if (gone)
		free_groups(d);
}

const vidx_groups *dups_groups(const dup_groups *d)
{
	return d->g;
}

size_t dups_images(const dup_groups *d)
{
	return d->images;
}

int64_t dups_compute_ms(const dup_groups *d)
{
	return d->compute_ms;
}

/* ---- one per group among search results ---------------------------------- */

struct dup_pick {
	dup_groups *d;
	unsigned char *seen;      /* [ngroups / 8 + 1] bit per group */
	size_t bytes;
};

int dups_pick_open(app *a, space *sp, double t, dup_pick **out, api_err *err)
{
	dup_pick *p = calloc(1, sizeof *p);
	*out = NULL;
	if (!p)
		return api_fail(err, API_ENOMEM, "out of memory");
	int rc = dups_get(a, sp, t, &p->d, err);
	if (rc) {
		free(p);
		return rc;
	}
	p->bytes = vidx_groups_count(p->d->g) / 8 + 1;
	if (!(p->seen = calloc(p->bytes, 1))) {
		dups_pick_close(p);
		return api_fail(err, API_ENOMEM, "out of memory");
	}
	*out = p;
	return 0;
}

void dups_pick_reset(dup_pick *p)
{
	memset(p->seen, 0, p->bytes);
}

int dups_pick_keep(dup_pick *p, int64_t id)
{
	int64_t g = vidx_groups_find(p->d->g, id);
	if (g < 0)
		return 1;
	unsigned char bit = (unsigned char)(1u << (g % 8));
	if (p->seen[g / 8] & bit)
		return 0;
	p->seen[g / 8] |= bit;
	return 1;
}

void dups_pick_close(dup_pick *p)
{
	if (!p)
		return;
	dups_release(p->d);
	free(p->seen);
	free(p);
}
