/*
 * sync.c: bringing an index up to date from the store, the source of truth.
 *
 * The store hands out one sequence number per embedding write and per
 * removal; a snapshot records the highest one it contains. Syncing reads
 * every change after it, in order, and applies them in batches (an item
 * appears at most once among the changes, so a batch can remove and add in
 * any order). The index's sequence advances after each batch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index_int.h"

#define SYNC_BATCH 4096
/* What on_change returns to stop the walk: no store_code is negative. */
#define SYNC_STOPPED (-1)

struct sync_ctx {
	vidx *v;
	float *x;          /* [SYNC_BATCH][dim] */
	int64_t *add;      /* [SYNC_BATCH] */
	int64_t *rm;       /* [SYNC_BATCH] */
	size_t nadd, nrm, applied;
	uint64_t last;
	vidx_err *err;
	int rc;
};

static int flush(struct sync_ctx *c)
{
	int rc = vidx_remove(c->v, c->nrm, c->rm, NULL, c->err);
	if (rc == VIDX_OK)
		rc = vidx_add(c->v, c->nadd, c->x, c->add, c->err);
	if (rc != VIDX_OK)
		return rc;
	c->applied += c->nadd + c->nrm;
	c->nadd = c->nrm = 0;
	vidx_set_seq(c->v, c->last);
	return VIDX_OK;
}

static int on_change(void *p, const store_change *ch)
{
	struct sync_ctx *c = p;
	int dim = vidx_dim(c->v);
	if (ch->vec) {
		if (ch->dim != dim) {
			c->rc = vidx_fail(c->err, VIDX_EMISMATCH,
			                  "the store's embedding of item %lld has dimension %d, the index %d",
			                  (long long)ch->item_id, ch->dim, dim);
			return SYNC_STOPPED;
		}
		memcpy(c->x + c->nadd * (size_t)dim, ch->vec, (size_t)dim * sizeof(float));
		c->add[c->nadd++] = ch->item_id;
	} else {
		c->rm[c->nrm++] = ch->item_id;
	}
	c->last = ch->seq;
	if (c->nadd == SYNC_BATCH || c->nrm == SYNC_BATCH) {
		if ((c->rc = flush(c)) != VIDX_OK)
			return SYNC_STOPPED;
	}
	return 0;
}

int vidx_sync(vidx *v, store *s, store_kind kind, size_t *applied, vidx_err *err)
{
	vidx_err local;
	store_err serr;
	if (!err)
		err = &local;
	struct sync_ctx c = {.v = v, .err = err, .last = vidx_seq(v)};
	c.x = malloc((size_t)SYNC_BATCH * (size_t)vidx_dim(v) * sizeof *c.x);
	c.add = malloc(SYNC_BATCH * sizeof *c.add);
	c.rm = malloc(SYNC_BATCH * sizeof *c.rm);
	int rc;
	if (!c.x || !c.add || !c.rm) {
		rc = vidx_fail(err, VIDX_ENOMEM, "out of memory");
		goto out;
	}
	rc = store_changes_after(s, kind, vidx_model(v), c.last, on_change, &c, &serr);
	if (rc == SYNC_STOPPED) {
		rc = c.rc;
	} else if (rc != STORE_OK) {
		rc = vidx_fail(err, VIDX_ESTORE, "%s", serr.msg);
	} else {
		rc = flush(&c);
	}
out:
	if (applied)
		*applied = c.applied;
	free(c.x);
	free(c.add);
	free(c.rm);
	return rc;
}

int vidx_build(store *s, store_kind kind, const char *factory, int dim, const char *model,
               vidx **out, vidx_err *err)
{
	vidx *v;
	int rc = vidx_create(factory, dim, model, &v, err);
	*out = NULL;
	if (rc != VIDX_OK)
		return rc;
	if ((rc = vidx_sync(v, s, kind, NULL, err)) != VIDX_OK) {
		vidx_close(v);
		return rc;
	}
	*out = v;
	return VIDX_OK;
}

int vidx_open_synced(const char *path, store *s, store_kind kind, const char *factory, int dim,
                     const char *model, vidx **out, char *note, size_t note_size, vidx_err *err)
{
	vidx_err local, lerr;
	char why[300] = "";
	char *want = NULL;
	vidx_kind wkind;
	vidx *v = NULL;
	int rc;

	if (!err)
		err = &local;
	*out = NULL;
	if ((rc = vidx_parse_factory(factory, dim, &want, &wkind, err)) != VIDX_OK)
		return rc;
	rc = vidx_load(path, model, dim, &v, &lerr);
	if (rc == VIDX_EMISMATCH) {
		*err = lerr;
		goto out;
	}
	if (rc == VIDX_ENOENT) {
		snprintf(why, sizeof why, "no snapshot yet: built from the store");
	} else if (rc != VIDX_OK) {
		snprintf(why, sizeof why, "%s: rebuilt from the store", lerr.msg);
	} else if (strcmp(vidx_requested(v), want) != 0) {
		snprintf(why, sizeof why, "snapshot is a %s index, %s was asked for: rebuilt from the store",
		         vidx_requested(v), want);
		vidx_close(v);
		v = NULL;
	} else {
		uint64_t last;
		store_err serr;
		if (store_last_seq(s, &last, &serr) != STORE_OK) {
			rc = vidx_fail(err, VIDX_ESTORE, "%s", serr.msg);
			goto out;
		}
		if (vidx_seq(v) > last) {
			/* The snapshot knows changes the database does not: the
			 * database was replaced or restored from a backup. */
			snprintf(why, sizeof why, "snapshot is newer than the database: rebuilt from the store");
			vidx_close(v);
			v = NULL;
		}
	}
	if (!v) {
		if ((rc = vidx_build(s, kind, want, dim, model, &v, err)) != VIDX_OK)
			goto out;
	} else {
		uint64_t from = vidx_seq(v);
		size_t applied = 0;
		if ((rc = vidx_sync(v, s, kind, &applied, err)) != VIDX_OK)
			goto out;
		snprintf(why, sizeof why, "loaded snapshot at sequence %llu, applied %zu newer changes",
		         (unsigned long long)from, applied);
	}
	*out = v;
	v = NULL;
	rc = VIDX_OK;
out:
	if (note && note_size)
		snprintf(note, note_size, "%s", rc == VIDX_OK ? why : err->msg);
	vidx_close(v);
	free(want);
	return rc;
}
