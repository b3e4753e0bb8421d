/*
 * index.c: creating, changing and searching the vector index.
 * The lock is described where it lives, in struct vidx (index_int.h).
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>

#include "index_int.h"

/* FAISS's k-means asks for at least 39 training points per centroid. */
#define POINTS_PER_CENTROID 39
/* 8-bit product quantizers have 256 centroids per sub-vector. */
#define PQ_TRAIN_MIN (256 * POINTS_PER_CENTROID)
/* Candidates per wanted result that a compressed index hands to the exact
 * re-ranking, and IVF lists searched per query: bench/index --sweep at 1M
 * vectors of --data lowdim, IVF1024,PQ64 (the auto kind's choice there),
 * gave recall@10 0.753 at nprobe 32 refine 10, 0.948 at 128/50, 0.974 at
 * 128/100 (1q p50 5.4 ms) and 0.982 at 256/100 (7.8 ms): past an eighth of
 * the lists the codes, not the lists, limit recall (README, "Large
 * collections"). */
#define DEFAULT_REFINE 100
#define NPROBE_MIN 32
#define NPROBE_FRACTION 8
/* At most this many candidates a query (or k, when more), so that a large
 * k times refine stays a bounded read of the vector file. */
#define REFINE_MAX 10000

int vidx_fail(vidx_err *err, vidx_code code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* The first line of this thread's last FAISS error: the rest is a C++
 * source location that means nothing to a user. */
static const char *faiss_error_line(char *buf, size_t size)
{
	const char *e = faiss_get_last_error();
	snprintf(buf, size, "%s", e ? e : "unknown error");
	buf[strcspn(buf, "\n")] = 0;
	return buf;
}

int vidx_faiss_fail(vidx_err *err, const char *what)
{
	char line[160];
	return vidx_fail(err, VIDX_EFAISS, "%s: %s", what, faiss_error_line(line, sizeof line));
}

static int eq_nocase(const char *a, const char *b)
{
	for (; *a && *b; a++, b++)
		if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
			return 0;
	return *a == *b;
}

int vidx_parse_factory(const char *f, int dim, char **expanded, vidx_kind *kind, vidx_err *err)
{
	char buf[128];

	*expanded = NULL;
	if (!f || !*f || eq_nocase(f, "exact") || eq_nocase(f, "flat")) {
		f = "Flat";
	} else if (eq_nocase(f, "hnsw")) {
		f = "HNSW32,Flat";
	} else if (eq_nocase(f, "ivfpq")) {
		/* 8-dimensional sub-vectors where the dimension allows it:
		 * 64 bytes a vector for 512-d embeddings. "np": no polysemous
		 * training, which FAISS does by default for PQ and which only
		 * serves Hamming-distance filtering this index never uses (it
		 * made training 5-10x slower). */
		int m = dim / 8;
		while (m > 1 && dim % m != 0)
			m--;
		snprintf(buf, sizeof buf, "IVF1024,PQ%dnp", m > 0 ? m : 1);
		f = buf;
	}
	if (strstr(f, "IDMap"))
		return vidx_fail(err, VIDX_EINVAL,
		                 "index factory \"%s\": leave out IDMap, the index maps ids itself", f);
	if (strlen(f) > 100)
		return vidx_fail(err, VIDX_EINVAL, "index factory string is too long");
	/* IVF first: "IVF4096_HNSW32,Flat" is an IVF index whose coarse
	 * quantizer is a graph. An IVF index keeps its own ids; behind a
	 * transform ("PCA64,IVF...") it could only be wrapped in an IDMap,
	 * whose removal assumes a sub-index that compacts, which IVF does not:
	 * refuse that rather than remove the wrong vectors. */
	if (strncmp(f, "IVF", 3) == 0)
		*kind = VIDX_IVF;
	else if (strstr(f, "IVF"))
		return vidx_fail(err, VIDX_EINVAL,
		                 "index factory \"%s\": an IVF index must come first (no transform before it)",
		                 f);
	else if (strcmp(f, "Flat") == 0)
		*kind = VIDX_EXACT;
	else if (strstr(f, "HNSW"))
		*kind = VIDX_HNSW;
	else
		*kind = VIDX_OTHER;
	if (!(*expanded = strdup(f)))
		return vidx_fail(err, VIDX_ENOMEM, "out of memory");
	return VIDX_OK;
}

static int new_faiss(const char *factory, int dim, int idmap, FaissIndex **out, vidx_err *err)
{
	char desc[128];
	snprintf(desc, sizeof desc, "%s%s", idmap ? "IDMap," : "", factory);
	*out = NULL;
	if (faiss_index_factory(out, dim, desc, METRIC_INNER_PRODUCT) != 0) {
		char line[160];
		return vidx_fail(err, VIDX_EINVAL, "index factory \"%s\" is not valid: %s", factory,
		                 faiss_error_line(line, sizeof line));
	}
	return VIDX_OK;
}

static int set_param_locked(vidx *v, const char *name, double value, vidx_err *err)
{
	FaissParameterSpace *ps = NULL;
	int rc = VIDX_OK;
	if (faiss_ParameterSpace_new(&ps) != 0)
		return vidx_faiss_fail(err, "parameter space");
	if (faiss_ParameterSpace_set_index_parameter(ps, v->main, name, value) != 0) {
		char line[160];
		rc = vidx_fail(err, VIDX_EINVAL, "index parameter %s: %s", name,
		               faiss_error_line(line, sizeof line));
	}
	faiss_ParameterSpace_free(ps);
	return rc;
}

/* Whether the factory's codes lose precision: anything but a final Flat
 * ("Flat", "IVF1024,Flat", "HNSW32,Flat"). */
static int compressed(const char *factory)
{
	const char *last = strrchr(factory, ',');
	last = last ? last + 1 : factory;
	return strncmp(last, "Flat", 4) != 0;
}

/* An eighth of the lists, at least NPROBE_MIN (and at most all). */
static size_t default_nprobe(size_t nlist)
{
	size_t np = nlist / NPROBE_FRACTION > NPROBE_MIN ? nlist / NPROBE_FRACTION : NPROBE_MIN;
	return np < nlist ? np : nlist;
}

int vidx_wrap(int dim, vidx_kind kind, const char *model, const char *factory, FaissIndex *main,
              FaissIndex *pending, vidx **out, vidx_err *err)
{
	vidx *v = calloc(1, sizeof *v);
	*out = NULL;
	if (!v || !(v->model = strdup(model)) || !(v->factory = strdup(factory))) {
		if (v) {
			free(v->model);
			free(v);
		}
		faiss_Index_free(main);
		faiss_Index_free(pending);
		return vidx_fail(err, VIDX_ENOMEM, "out of memory");
	}
	pthread_rwlock_init(&v->lock, NULL);
	v->dim = dim;
	v->kind = kind;
	v->main = main;
	v->pending = pending;
	v->has_vecs = kind == VIDX_IVF || kind == VIDX_OTHER;
	vecs_init(&v->vecs, dim);
	v->refine = v->has_vecs && compressed(factory) ? DEFAULT_REFINE : 0;
	/* The default nprobe (nprobe 1 is FAISS's), also over a loaded
	 * snapshot's, which FAISS keeps in the file: an explicit one is set
	 * after opening. */
	FaissIndexIVF *ivf0 = kind == VIDX_IVF ? faiss_IndexIVF_cast(main) : NULL;
	if (ivf0)
		faiss_IndexIVF_set_nprobe(ivf0, default_nprobe(faiss_IndexIVF_nlist(ivf0)));
	/* Enough training points for FAISS's k-means: 39 per IVF list, and
	 * 39 per product-quantizer centroid when the codes are PQ. */
	v->train_min = 0;
	if (!faiss_Index_is_trained(main)) {
		FaissIndexIVF *ivf = faiss_IndexIVF_cast(main);
		if (ivf)
			v->train_min = faiss_IndexIVF_nlist(ivf) * POINTS_PER_CENTROID;
		if (!ivf || strstr(factory, "PQ"))
			v->train_min = v->train_min > PQ_TRAIN_MIN ? v->train_min : PQ_TRAIN_MIN;
	}
	*out = v;
	return VIDX_OK;
}

int vidx_create(const char *factory, int dim, const char *model, vidx **out, vidx_err *err)
{
	char *f = NULL;
	vidx_kind kind;
	FaissIndex *main = NULL, *pending = NULL;
	int rc, is_auto = factory && eq_nocase(factory, "auto");

	*out = NULL;
	if (is_auto)
		factory = "Flat";
	if (dim <= 0 || dim > 65536)
		return vidx_fail(err, VIDX_EINVAL, "dimension %d is out of range", dim);
	if (!model || !*model)
		return vidx_fail(err, VIDX_EINVAL, "a model id is required");
	if ((rc = vidx_parse_factory(factory, dim, &f, &kind, err)) != VIDX_OK)
		return rc;
	/* HNSW cannot take ids; IVF keeps them itself (and IDMap's removal
	 * assumes the sub-index compacts, which IVF does not). */
	if ((rc = new_faiss(f, dim, kind == VIDX_EXACT || kind == VIDX_OTHER, &main, err)) != VIDX_OK)
		goto out;
	if (!faiss_Index_is_trained(main)) {
		if (kind == VIDX_HNSW) {
			rc = vidx_fail(err, VIDX_EINVAL, "index factory \"%s\": an HNSW index that needs "
			               "training is not supported; use HNSW32,Flat", f);
			goto out;
		}
		if ((rc = new_faiss("Flat", dim, 1, &pending, err)) != VIDX_OK)
			goto out;
	}
	vidx *v;
	rc = vidx_wrap(dim, kind, model, f, main, pending, &v, err);
	main = pending = NULL;
	if (rc != VIDX_OK)
		goto out;
	/* Search defaults that keep recall@10 high on CLIP embeddings (see
	 * bench/index.c); FAISS's own efSearch 16 is tuned for speed (nprobe:
	 * vidx_wrap). */
	if (kind == VIDX_HNSW)
		rc = set_param_locked(v, "efSearch", 64, err);
	if (rc != VIDX_OK) {
		vidx_close(v);
		goto out;
	}
	if (is_auto)
		vidx_make_auto(v);
	*out = v;
out:
	faiss_Index_free(main);
	faiss_Index_free(pending);
	free(f);
	return rc;
}

void vidx_close(vidx *v)
{
	if (!v)
		return;
	faiss_Index_free(v->main);
	faiss_Index_free(v->pending);
	idset_free(&v->ids);
	vecs_free(&v->vecs);
	free(v->slot_id);
	free(v->model);
	free(v->factory);
	for (struct retired *r = v->retired, *next; r; r = next) {
		next = r->next;
		free(r->s);
		free(r);
	}
	free(v->jr.id);
	free(v->jr.rm);
	free(v->jr.x);
	pthread_rwlock_destroy(&v->lock);
	free(v);
}

/* ---- removal ------------------------------------------------------------- */

static int remove_faiss(FaissIndex *idx, size_t n, const int64_t *ids, vidx_err *err)
{
	FaissIDSelectorBatch *sel = NULL;
	size_t nr = 0;
	if (!idx || faiss_Index_ntotal(idx) == 0 || n == 0)
		return VIDX_OK;
	if (faiss_IDSelectorBatch_new(&sel, n, ids) != 0)
		return vidx_faiss_fail(err, "removing vectors");
	int rc = faiss_Index_remove_ids(idx, (FaissIDSelector *)sel, &nr);
	faiss_IDSelector_free((FaissIDSelector *)sel);
	return rc == 0 ? VIDX_OK : vidx_faiss_fail(err, "removing vectors");
}

/* Removes ids known to be present (each once). */
static int remove_locked(vidx *v, size_t n, const int64_t *ids, vidx_err *err)
{
	if (n == 0)
		return VIDX_OK;
	if (v->kind == VIDX_HNSW) {
		for (size_t i = 0; i < n; i++) {
			int64_t slot;
			if (idset_get(&v->ids, ids[i], &slot)) {
				v->slot_id[slot] = -1;
				v->ndead++;
				idset_del(&v->ids, ids[i]);
			}
		}
		return VIDX_OK;
	}
	int rc = remove_faiss(v->main, n, ids, err);
	if (rc == VIDX_OK)
		rc = remove_faiss(v->pending, n, ids, err);
	if (rc != VIDX_OK)
		return rc;
	for (size_t i = 0; i < n; i++) {
		idset_del(&v->ids, ids[i]);
		if (v->has_vecs)
			vecs_del(&v->vecs, ids[i]);
	}
	return VIDX_OK;
}

/* Keeps the ids of ids[n] that are present, in a new array *present. */
static int present_ids(vidx *v, size_t n, const int64_t *ids, int64_t **present, size_t *np,
                       vidx_err *err)
{
	*present = NULL;
	*np = 0;
	for (size_t i = 0; i < n; i++) {
		if (!idset_get(&v->ids, ids[i], NULL))
			continue;
		if (!*present && !(*present = malloc(n * sizeof **present)))
			return vidx_fail(err, VIDX_ENOMEM, "out of memory");
		(*present)[(*np)++] = ids[i];
	}
	return VIDX_OK;
}

int vidx_remove(vidx *v, size_t n, const int64_t *ids, size_t *removed, vidx_err *err)
{
	int64_t *p = NULL;
	size_t np = 0;
	if (removed)
		*removed = 0;
	if (n && !ids)
		return vidx_fail(err, VIDX_EINVAL, "no ids given");
	pthread_rwlock_wrlock(&v->lock);
	int rc = present_ids(v, n, ids, &p, &np, err);
	if (rc == VIDX_OK) {
		/* Duplicates in ids would make FAISS count twice; the id set
		 * gives each once. */
		size_t k = 0;
		idset seen = {0};
		for (size_t i = 0; i < np; i++) {
			if (idset_get(&seen, p[i], NULL))
				continue;
			if (idset_put(&seen, p[i], 0) != 0) {
				rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
				break;
			}
			p[k++] = p[i];
		}
		idset_free(&seen);
		np = k;
		if (rc == VIDX_OK)
			rc = remove_locked(v, np, p, err);
		if (rc == VIDX_OK && v->jr.on)
			vidx_journal_remove(v, np, p);
	}
	pthread_rwlock_unlock(&v->lock);
	free(p);
	if (rc == VIDX_OK && removed)
		*removed = np;
	return rc;
}

/* ---- adding -------------------------------------------------------------- */

/* Trains main on everything in pending, then moves it over. */
static int train_from_pending(vidx *v, vidx_err *err)
{
	size_t n = (size_t)faiss_Index_ntotal(v->pending);
	int64_t *map;
	size_t nmap;
	float *x = malloc(n * (size_t)v->dim * sizeof *x);
	int64_t *ids = malloc(n * sizeof *ids);
	int rc = VIDX_OK;

	if (!x || !ids) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory training the index");
		goto out;
	}
	faiss_IndexIDMap_id_map((FaissIndexIDMap *)v->pending, &map, &nmap);
	memcpy(ids, map, n * sizeof *ids);
	FaissIndex *flat = faiss_IndexIDMap_sub_index((FaissIndexIDMap *)v->pending);
	if (faiss_Index_reconstruct_n(flat, 0, (idx_t)n, x) != 0) {
		rc = vidx_faiss_fail(err, "training the index");
		goto out;
	}
	if (faiss_Index_train(v->main, (idx_t)n, x) != 0 ||
	    faiss_Index_add_with_ids(v->main, (idx_t)n, x, ids) != 0) {
		rc = vidx_faiss_fail(err, "training the index");
		/* Whatever part reached main goes: pending still holds it all. */
		faiss_Index_reset(v->main);
		goto out;
	}
	faiss_Index_free(v->pending);
	v->pending = NULL;
	v->train_error[0] = 0;
out:
	free(x);
	free(ids);
	return rc;
}

void vidx_inject_add_failures(vidx *v, int n)
{
	pthread_rwlock_wrlock(&v->lock);
	v->fail_adds = n;
	pthread_rwlock_unlock(&v->lock);
}

/* FAISS's add, or an injected failure. */
static int faiss_add(vidx *v, FaissIndex *into, size_t n, const float *x, const int64_t *ids)
{
	if (v->fail_adds > 0) {
		v->fail_adds--;
		return -1;
	}
	return ids ? faiss_Index_add_with_ids(into, (idx_t)n, x, ids)
	           : faiss_Index_add(into, (idx_t)n, x);
}

static int add_locked(vidx *v, size_t n, const float *x, const int64_t *ids, vidx_err *err)
{
	if (v->kind == VIDX_HNSW) {
		if (v->nslots + n > v->slots_cap) {
			size_t cap = v->slots_cap ? v->slots_cap : 1024;
			while (cap < v->nslots + n)
				cap *= 2;
			int64_t *p = realloc(v->slot_id, cap * sizeof *p);
			if (!p)
				return vidx_fail(err, VIDX_ENOMEM, "out of memory");
			v->slot_id = p;
			v->slots_cap = cap;
		}
		/* A replaced id keeps its old node until the new one is in the
		 * graph: a failing add leaves the id set as it was. */
		int64_t *old = malloc(n * sizeof *old);
		if (!old)
			return vidx_fail(err, VIDX_ENOMEM, "out of memory");
		for (size_t i = 0; i < n; i++)
			if (!idset_get(&v->ids, ids[i], &old[i]))
				old[i] = -1;
		int rc = VIDX_OK;
		size_t put = 0;
		for (; put < n; put++)
			if (idset_put(&v->ids, ids[put], (int64_t)(v->nslots + put)) != 0) {
				rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
				break;
			}
		if (rc == VIDX_OK && faiss_add(v, v->main, n, x, NULL) != 0)
			rc = vidx_faiss_fail(err, "adding vectors");
		if (rc != VIDX_OK) {
			for (size_t i = 0; i < put; i++)
				if (old[i] >= 0)
					idset_put(&v->ids, ids[i], old[i]); /* the key exists: no allocation */
				else
					idset_del(&v->ids, ids[i]);
			free(old);
			return rc;
		}
		for (size_t i = 0; i < n; i++)
			if (old[i] >= 0) {
				v->slot_id[old[i]] = -1;
				v->ndead++;
			}
		free(old);
		memcpy(v->slot_id + v->nslots, ids, n * sizeof *ids);
		v->nslots += n;
		return VIDX_OK;
	}

	/* The ids are not present (vidx_add removed the replaced ones). */
	FaissIndex *into = v->pending ? v->pending : v->main;
	for (size_t i = 0; i < n; i++)
		if (idset_put(&v->ids, ids[i], 0) != 0 ||
		    (v->has_vecs && vecs_put(&v->vecs, ids[i], x + i * (size_t)v->dim) != 0)) {
			for (size_t j = 0; j <= i; j++) {
				idset_del(&v->ids, ids[j]);
				if (v->has_vecs)
					vecs_del(&v->vecs, ids[j]);
			}
			return vidx_fail(err, VIDX_ENOMEM, "out of memory");
		}
	if (faiss_add(v, into, n, x, ids) != 0) {
		for (size_t i = 0; i < n; i++) {
			idset_del(&v->ids, ids[i]);
			if (v->has_vecs)
				vecs_del(&v->vecs, ids[i]);
		}
		return vidx_faiss_fail(err, "adding vectors");
	}
	if (v->pending && !v->background &&
	    (size_t)faiss_Index_ntotal(v->pending) >= v->train_min) {
		/* The add itself is done: a failed training leaves the vectors
		 * in pending, searched exactly, and is tried again on the next
		 * add. */
		vidx_err terr;
		if (train_from_pending(v, &terr) != VIDX_OK)
			snprintf(v->train_error, sizeof v->train_error, "%s", terr.msg);
	}
	return VIDX_OK;
}

/* The vectors of ids p[np], each present once, into a new *out[np][dim]:
 * from the index's own float vectors (IVF and other kinds keep them:
 * FAISS's C API cannot give one back from trained IVF lists, its direct map
 * wanting ids 0..n-1), else from the rows of an IDMap (found through its id
 * map). */
static int old_vectors_locked(vidx *v, size_t np, const int64_t *p, float **out, vidx_err *err)
{
	size_t dim = (size_t)v->dim, found = 0;
	idset want = {0};
	float *x = malloc(np * dim * sizeof *x);
	int rc = VIDX_OK;
	*out = NULL;
	if (!x)
		return vidx_fail(err, VIDX_ENOMEM, "out of memory");
	if (v->has_vecs) {
		for (size_t i = 0; i < np; i++) {
			const float *o = vecs_get(&v->vecs, p[i]);
			if (!o) {
				rc = vidx_fail(err, VIDX_EFAISS, "id %lld has no vector kept",
				               (long long)p[i]);
				goto out;
			}
			memcpy(x + i * dim, o, dim * sizeof *x);
		}
		found = np;
		goto out;
	}
	for (size_t i = 0; i < np; i++)
		if (idset_put(&want, p[i], (int64_t)i) != 0) {
			rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
			goto out;
		}
	FaissIndex *maps[2] = {v->kind == VIDX_IVF ? NULL : v->main, v->pending};
	for (int m = 0; m < 2; m++) {
		FaissIndexIDMap *map = maps[m] ? faiss_IndexIDMap_cast(maps[m]) : NULL;
		if (!map)
			continue;
		FaissIndex *sub = faiss_IndexIDMap_sub_index(map);
		int64_t *row_id, at;
		size_t nrows;
		faiss_IndexIDMap_id_map(map, &row_id, &nrows);
		for (size_t r = 0; r < nrows; r++) {
			if (!idset_get(&want, row_id[r], &at))
				continue;
			if (faiss_Index_reconstruct(sub, (idx_t)r, x + (size_t)at * dim) != 0) {
				rc = vidx_faiss_fail(err, "keeping a replaced vector");
				goto out;
			}
			idset_del(&want, row_id[r]);
			found++;
		}
	}
	if (rc == VIDX_OK && found < np)
		rc = vidx_fail(err, VIDX_EFAISS, "%zu of %zu replaced vectors not found in the index",
		               np - found, np);
out:
	idset_free(&want);
	if (rc == VIDX_OK)
		*out = x;
	else
		free(x);
	return rc;
}

int vidx_add(vidx *v, size_t n, const float *x, const int64_t *ids, vidx_err *err)
{
	int rc = VIDX_OK;
	int64_t *p = NULL;
	float *old = NULL;
	size_t np = 0;
	idset seen = {0};

	if (n == 0)
		return VIDX_OK;
	if (!x || !ids)
		return vidx_fail(err, VIDX_EINVAL, "vectors and ids are required");
	for (size_t i = 0; i < n; i++) {
		if (ids[i] < 0) {
			rc = vidx_fail(err, VIDX_EINVAL, "id %lld is negative", (long long)ids[i]);
			goto out;
		}
		if (idset_get(&seen, ids[i], NULL)) {
			rc = vidx_fail(err, VIDX_EINVAL, "id %lld appears twice in one batch",
			               (long long)ids[i]);
			goto out;
		}
		if (idset_put(&seen, ids[i], 0) != 0) {
			rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
			goto out;
		}
	}
	for (size_t i = 0; i < n * (size_t)v->dim; i++)
		if (!isfinite(x[i])) {
			rc = vidx_fail(err, VIDX_EINVAL, "vector of id %lld is not finite",
			               (long long)ids[i / (size_t)v->dim]);
			goto out;
		}

	pthread_rwlock_wrlock(&v->lock);
	if (v->kind == VIDX_HNSW) {
		rc = add_locked(v, n, x, ids, err);
	} else {
		np = 0;
		/* FAISS cannot hold an id twice and replace it in one step:
		 * keep the old vectors, remove them, add the new ones, and put
		 * the old ones back if that add fails. */
		rc = present_ids(v, n, ids, &p, &np, err);
		if (rc == VIDX_OK && np)
			rc = old_vectors_locked(v, np, p, &old, err);
		if (rc == VIDX_OK)
			rc = remove_locked(v, np, p, err);
		if (rc == VIDX_OK && (rc = add_locked(v, n, x, ids, err)) != VIDX_OK && old) {
			vidx_err again;
			if (add_locked(v, np, old, p, &again) != VIDX_OK)
				vidx_fail(err, rc, "%s; and restoring the %zu replaced vectors failed: %s",
				          err ? err->msg : "adding failed", np, again.msg);
		}
	}
	if (rc == VIDX_OK && v->jr.on)
		vidx_journal_set(v, n, ids, x);
	pthread_rwlock_unlock(&v->lock);
out:
	idset_free(&seen);
	free(p);
	free(old);
	return rc;
}

/* ---- search -------------------------------------------------------------- */

/* Merges two best-first lists of k (a and b) into out, best first. */
static void merge_topk(int k, const float *as, const int64_t *ai, const float *bs,
                       const int64_t *bi, float *os, int64_t *oi)
{
	int i = 0, j = 0;
	for (int o = 0; o < k; o++) {
		int a_ok = i < k && ai[i] >= 0, b_ok = j < k && bi[j] >= 0;
		if (a_ok && (!b_ok || as[i] >= bs[j])) {
			os[o] = as[i];
			oi[o] = ai[i++];
		} else if (b_ok) {
			os[o] = bs[j];
			oi[o] = bi[j++];
		} else {
			oi[o] = -1;
		}
	}
}

static void fill_missing(size_t n, float *scores, int64_t *ids)
{
	for (size_t i = 0; i < n; i++)
		if (ids[i] < 0)
			scores[i] = -INFINITY;
}

static int search_hnsw(vidx *v, size_t nq, const float *q, int k, float *scores, int64_t *ids,
                       vidx_err *err)
{
	/* Removed nodes may take places among the best; ask for enough more
	 * that k live ones remain. */
	size_t kk = (size_t)k + v->ndead;
	if (kk > v->nslots)
		kk = v->nslots;
	float *s = malloc(nq * kk * sizeof *s);
	int64_t *l = malloc(nq * kk * sizeof *l);
	int rc = VIDX_OK;
	if (!s || !l) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		goto out;
	}
	if (faiss_Index_search(v->main, (idx_t)nq, q, (idx_t)kk, s, l) != 0) {
		rc = vidx_faiss_fail(err, "searching");
		goto out;
	}
	for (size_t qi = 0; qi < nq; qi++) {
		int o = 0;
		for (size_t j = 0; j < kk && o < k; j++) {
			int64_t slot = l[qi * kk + j];
			if (slot < 0 || (size_t)slot >= v->nslots || v->slot_id[slot] < 0)
				continue;
			scores[qi * k + o] = s[qi * kk + j];
			ids[qi * k + o] = v->slot_id[slot];
			o++;
		}
		for (; o < k; o++)
			ids[qi * k + o] = -1;
	}
out:
	free(s);
	free(l);
	return rc;
}


int vidx_flat_rows(vidx *v, const float **xb, const int64_t **row_id, size_t *n, vidx_err *err)
{
	FaissIndexIDMap *map = faiss_IndexIDMap_cast(v->main);
	FaissIndexFlat *flat = map ? faiss_IndexFlat_cast(faiss_IndexIDMap_sub_index(map)) : NULL;
	float *x;
	int64_t *ids;
	size_t nx;
	if (!flat)
		return vidx_fail(err, VIDX_EFAISS, "exact index is not an IDMap over Flat");
	faiss_IndexFlat_xb(flat, &x, &nx);
	faiss_IndexIDMap_id_map(map, &ids, n);
	if (*n * (size_t)v->dim != nx)
		return vidx_fail(err, VIDX_EFAISS, "exact index: %zu ids for %zu floats", *n, nx);
	*xb = x;
	*row_id = ids;
	return VIDX_OK;
}

static int search_exact_split(vidx *v, size_t nq, const float *q, int k, float *scores,
                              int64_t *ids, vidx_err *err)
{
	const float *xb;
	const int64_t *row_id;
	size_t nids;
	int rc = vidx_flat_rows(v, &xb, &row_id, &nids, err);
	for (size_t i = 0; rc == VIDX_OK && i < nq; i++)
		rc = vidx_scan_topk(xb, row_id, nids, v->dim, q + i * (size_t)v->dim, k,
		                    omp_get_max_threads(), scores + i * (size_t)k, ids + i * (size_t)k,
		                    err);
	return rc;
}

/* The search itself, under the lock: ids[] are -1 on entry. */
static int search_locked(vidx *v, size_t nq, const float *q, int k, float *scores, int64_t *ids,
                         vidx_err *err)
{
	int rc = VIDX_OK;
	size_t nres = nq * (size_t)k;
	if (v->kind == VIDX_HNSW) {
		if (v->nslots > 0)
			rc = search_hnsw(v, nq, q, k, scores, ids, err);
	} else if (v->kind == VIDX_EXACT && (int)nq < omp_get_max_threads() &&
	           (size_t)faiss_Index_ntotal(v->main) >= SCAN_SPLIT_MIN) {
		rc = search_exact_split(v, nq, q, k, scores, ids, err);
	} else if (!v->pending) {
		if (faiss_Index_ntotal(v->main) > 0 &&
		    faiss_Index_search(v->main, (idx_t)nq, q, k, scores, ids) != 0)
			rc = vidx_faiss_fail(err, "searching");
	} else if (faiss_Index_ntotal(v->main) == 0) {
		if (faiss_Index_ntotal(v->pending) > 0 &&
		    faiss_Index_search(v->pending, (idx_t)nq, q, k, scores, ids) != 0)
			rc = vidx_faiss_fail(err, "searching");
	} else {
		/* Both hold vectors (an IVF index trained from a snapshot while
		 * more wait): search each and merge. */
		float *s = malloc(2 * nres * sizeof *s);
		int64_t *l = malloc(2 * nres * sizeof *l);
		if (!s || !l) {
			rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		} else {
			for (size_t i = 0; i < 2 * nres; i++)
				l[i] = -1;
			if (faiss_Index_search(v->main, (idx_t)nq, q, k, s, l) != 0 ||
			    faiss_Index_search(v->pending, (idx_t)nq, q, k, s + nres, l + nres) != 0) {
				rc = vidx_faiss_fail(err, "searching");
			} else {
				for (size_t qi = 0; qi < nq; qi++)
					merge_topk(k, s + qi * k, l + qi * k, s + nres + qi * k,
					           l + nres + qi * k, scores + qi * k, ids + qi * k);
			}
		}
		free(s);
		free(l);
	}
	return rc;
}

typedef struct cand {
	float s;
	int64_t id;
} cand;

static int cand_order(const void *a, const void *b)
{
	const cand *x = a, *y = b;
	if (x->s != y->s)
		return x->s > y->s ? -1 : 1;
	return (x->id > y->id) - (x->id < y->id);
}

/* A compressed index proposes refine * k candidates per query; each is
 * scored again with its exact vector, and the k best of those are kept. */
static int search_refined(vidx *v, size_t nq, const float *q, int k, float *scores, int64_t *ids,
                          vidx_err *err)
{
	size_t kk = (size_t)k * (size_t)v->refine, d = (size_t)v->dim;
	if (kk > REFINE_MAX)
		kk = k > REFINE_MAX ? (size_t)k : REFINE_MAX;
	if (kk > v->ids.n)
		kk = v->ids.n > (size_t)k ? v->ids.n : (size_t)k;
	float *s = malloc(nq * kk * sizeof *s);
	int64_t *l = malloc(nq * kk * sizeof *l);
	cand *c = malloc(kk * sizeof *c);
	int rc = VIDX_OK;
	if (!s || !l || !c) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < nq * kk; i++)
		l[i] = -1;
	if ((rc = search_locked(v, nq, q, (int)kk, s, l, err)) != VIDX_OK)
		goto out;
	for (size_t qi = 0; qi < nq; qi++) {
		const float *qv = q + qi * d;
		size_t m = 0;
		for (size_t j = 0; j < kk; j++) {
			int64_t id = l[qi * kk + j];
			const float *x = id >= 0 ? vecs_get(&v->vecs, id) : NULL;
			if (!x)
				continue;
			c[m++] = (cand){vidx_dot(x, qv, (int)d), id};
		}
		qsort(c, m, sizeof *c, cand_order);
		for (size_t o = 0; o < (size_t)k; o++) {
			scores[qi * k + o] = o < m ? c[o].s : 0;
			ids[qi * k + o] = o < m ? c[o].id : -1;
		}
	}
out:
	free(s);
	free(l);
	free(c);
	return rc;
}

int vidx_search_held(vidx *v, size_t nq, const float *q, int k, float *scores, int64_t *ids,
                     vidx_err *err)
{
	if (v->has_vecs && v->refine > 0 && faiss_Index_ntotal(v->main) > 0)
		return search_refined(v, nq, q, k, scores, ids, err);
	return search_locked(v, nq, q, k, scores, ids, err);
}

int vidx_search(vidx *v, size_t nq, const float *q, int k, float *scores, int64_t *ids,
                vidx_err *err)
{
	int rc = VIDX_OK;
	if (k <= 0 || k > 100000)
		return vidx_fail(err, VIDX_EINVAL, "k must be between 1 and 100000");
	if (nq == 0)
		return VIDX_OK;
	if (!q || !scores || !ids)
		return vidx_fail(err, VIDX_EINVAL, "queries and result arrays are required");
	size_t nres = nq * (size_t)k;
	for (size_t i = 0; i < nres; i++)
		ids[i] = -1;

	pthread_rwlock_rdlock(&v->lock);
	rc = vidx_search_held(v, nq, q, k, scores, ids, err);
	pthread_rwlock_unlock(&v->lock);
	if (rc == VIDX_OK)
		fill_missing(nres, scores, ids);
	return rc;
}

/* ---- small accessors ----------------------------------------------------- */

int vidx_set_param(vidx *v, const char *name, double value, vidx_err *err)
{
	if (!name)
		return vidx_fail(err, VIDX_EINVAL, "parameter name is required");
	if (strcmp(name, "refine") == 0) {
		pthread_rwlock_rdlock(&v->lock);
		int has = v->has_vecs;
		pthread_rwlock_unlock(&v->lock);
		if (!has && !v->auto_mode)
			return vidx_fail(err, VIDX_EINVAL, "index parameter refine: a %s index is exact "
			                 "already", vidx_kind_name(v));
		if (!(value >= 0 && value <= 1000) || value != (int)value)
			return vidx_fail(err, VIDX_EINVAL, "index parameter refine: an integer from 0 "
			                 "to 1000");
		pthread_rwlock_wrlock(&v->lock);
		v->refine = (int)value;
		v->refine_set = 1;
		pthread_rwlock_unlock(&v->lock);
		return VIDX_OK;
	}
	if (strcmp(name, "nprobe") == 0 && v->auto_mode) {
		/* auto before its move: kept for the IVF index it moves to. */
		pthread_rwlock_wrlock(&v->lock);
		int later = v->kind != VIDX_IVF;
		if (later && value >= 1 && value <= 65536)
			v->nprobe = value;
		pthread_rwlock_unlock(&v->lock);
		if (later)
			return value >= 1 && value <= 65536
			           ? VIDX_OK
			           : vidx_fail(err, VIDX_EINVAL, "index parameter nprobe: 1 to 65536");
	}
	if (strcmp(name, "auto_threshold") == 0) {
		if (!v->auto_mode)
			return vidx_fail(err, VIDX_EINVAL, "index parameter auto_threshold: only for an "
			                 "auto index");
		if (!(value >= 1 && value <= 1e12))
			return vidx_fail(err, VIDX_EINVAL, "index parameter auto_threshold: from 1 vector");
		pthread_rwlock_wrlock(&v->lock);
		v->auto_at = (size_t)value;
		pthread_rwlock_unlock(&v->lock);
		return VIDX_OK;
	}
	pthread_rwlock_wrlock(&v->lock);
	int rc = set_param_locked(v, name, value, err);
	if (rc == VIDX_OK && strcmp(name, "nprobe") == 0)
		v->nprobe = value;
	else if (rc == VIDX_OK && strcmp(name, "efSearch") == 0)
		v->efsearch = value;
	pthread_rwlock_unlock(&v->lock);
	return rc;
}

int vidx_contains(vidx *v, int64_t id)
{
	pthread_rwlock_rdlock(&v->lock);
	int r = idset_get(&v->ids, id, NULL);
	pthread_rwlock_unlock(&v->lock);
	return r;
}

size_t vidx_count(vidx *v)
{
	pthread_rwlock_rdlock(&v->lock);
	size_t n = v->ids.n;
	pthread_rwlock_unlock(&v->lock);
	return n;
}

size_t vidx_dead(vidx *v)
{
	pthread_rwlock_rdlock(&v->lock);
	size_t n = v->ndead;
	pthread_rwlock_unlock(&v->lock);
	return n;
}

int vidx_dim(const vidx *v)
{
	return v->dim;
}

const char *vidx_model(const vidx *v)
{
	return v->model;
}

const char *vidx_factory(const vidx *v)
{
	vidx *w = (vidx *)v;
	pthread_rwlock_rdlock(&w->lock);
	const char *f = w->factory;
	pthread_rwlock_unlock(&w->lock);
	return f;
}

const char *vidx_requested(const vidx *v)
{
	return v->auto_mode ? "auto" : vidx_factory(v);
}

const char *vidx_kind_name(const vidx *v)
{
	static const char *const names[] = {"exact", "hnsw", "ivf", "other"};
	vidx *w = (vidx *)v;
	pthread_rwlock_rdlock(&w->lock);
	vidx_kind k = w->kind;
	pthread_rwlock_unlock(&w->lock);
	return names[k];
}

uint64_t vidx_seq(vidx *v)
{
	pthread_rwlock_rdlock(&v->lock);
	uint64_t s = v->seq;
	pthread_rwlock_unlock(&v->lock);
	return s;
}

void vidx_set_seq(vidx *v, uint64_t seq)
{
	pthread_rwlock_wrlock(&v->lock);
	v->seq = seq;
	pthread_rwlock_unlock(&v->lock);
}

int vidx_index_ids(vidx *v, vidx_err *err)
{
	idset_free(&v->ids);
	v->ndead = 0;
	if (v->kind == VIDX_HNSW) {
		for (size_t slot = 0; slot < v->nslots; slot++) {
			int64_t id = v->slot_id[slot];
			if (id < 0) {
				v->ndead++;
				continue;
			}
			if (idset_get(&v->ids, id, NULL))
				return vidx_fail(err, VIDX_ECORRUPT, "index holds id %lld twice", (long long)id);
			if (idset_put(&v->ids, id, (int64_t)slot) != 0)
				return vidx_fail(err, VIDX_ENOMEM, "out of memory");
		}
		return VIDX_OK;
	}
	FaissIndex *maps[2] = {v->kind == VIDX_IVF ? NULL : v->main, v->pending};
	for (int m = 0; m < 2; m++) {
		if (!maps[m])
			continue;
		FaissIndexIDMap *idmap = faiss_IndexIDMap_cast(maps[m]);
		int64_t *ids;
		size_t n;
		if (!idmap)
			return vidx_fail(err, VIDX_ECORRUPT, "index is not of the kind its header says");
		faiss_IndexIDMap_id_map(idmap, &ids, &n);
		for (size_t i = 0; i < n; i++)
			if (idset_put(&v->ids, ids[i], 0) != 0)
				return vidx_fail(err, VIDX_ENOMEM, "out of memory");
	}
	if (v->kind == VIDX_IVF) {
		FaissIndexIVF *ivf = faiss_IndexIVF_cast(v->main);
		if (!ivf)
			return vidx_fail(err, VIDX_ECORRUPT, "index is not of the kind its header says");
		size_t nlist = faiss_IndexIVF_nlist(ivf), cap = 0;
		int64_t *buf = NULL;
		for (size_t l = 0; l < nlist; l++) {
			size_t n = faiss_IndexIVF_get_list_size(ivf, l);
			if (n == 0)
				continue;
			if (n > cap) {
				int64_t *p = realloc(buf, n * sizeof *p);
				if (!p) {
					free(buf);
					return vidx_fail(err, VIDX_ENOMEM, "out of memory");
				}
				buf = p;
				cap = n;
			}
			faiss_IndexIVF_invlists_get_ids(ivf, l, buf);
			for (size_t i = 0; i < n; i++)
				if (idset_put(&v->ids, buf[i], 0) != 0) {
					free(buf);
					return vidx_fail(err, VIDX_ENOMEM, "out of memory");
				}
		}
		free(buf);
	}
	return VIDX_OK;
}
