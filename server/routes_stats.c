/* routes_stats.c: the daemon's counts and state: GET /v1/stats (JSON: items,
 * model, indexes, queue, prompt cache, the models held and a migration's
 * progress) and GET /metrics (Prometheus: the
 * same counts plus the request and encode counters of metrics.c). */
#include "app.h"
#include "clock.h"
#include "encode_pool.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "routes.h"

void route_metrics(http_req *r)
{
	app *a = http_req_app(r);
	space *sp = http_req_space(r);
	metrics_gauges g = {.version = CLIPD_VERSION, .model_id = sp->model_id};
	migrate_stats ms;
	store_err se;
	api_err e;
	coll_stats cs;
	size_t len;

	g.have_store = store_image_count(a->st, &g.images_total, &g.images_ready, &se) == STORE_OK &&
	               store_text_count(a->st, &g.texts_total, &se) == STORE_OK &&
	               store_work_depth(a->st, &g.queue_depth, &se) == STORE_OK;
	if (!g.have_store)
		log_warn("metrics: store counts left out: %s", se.msg);
	for (int k = 0; k < 2; k++) {
		coll_get_stats(sp->coll, (store_kind)k, &cs);
		g.index_vectors[k] = (int64_t)cs.count;
		g.index_kind[k] = cs.kind;
		g.index_factory[k] = cs.factory;
		g.index_maint_running[k] = cs.state.running == VIDX_MAINT_NONE
		                               ? NULL
		                               : vidx_maint_name(cs.state.running);
		g.index_maintenances[k] = cs.state.maintenances;
		g.index_maint_exclusive_ms[k] = cs.state.last_swap_ms;
	}
	migrate_get(a->mig, &ms);
	g.migrating = ms.active;
	g.migration_model = ms.to_id;
	g.migration_total = ms.total;
	g.migration_done = ms.done;
	g.migration_failed = ms.failed;
	g.migration_embedded = ms.embedded;
	char *text = metrics_render(&g, &len);
	if (!text) {
		api_fail(&e, API_ENOMEM, "out of memory");
		http_reply_error(r, &e);
		return;
	}
	http_reply_data(r, 200, text, len, 1, "text/plain; version=0.0.4; charset=utf-8");
}

/* A maintenance task's name, or null. */
static json_t *task_json(vidx_maint m)
{
	return m == VIDX_MAINT_NONE ? json_null() : json_string(vidx_maint_name(m));
}

static json_t *index_json(space *sp, store_kind kind)
{
	coll_stats cs;
	coll_get_stats(sp->coll, kind, &cs);
	const vidx_state *st = &cs.state;
	json_t *maint = json_pack(
	    "{s:o,s:o,s:I,s:f,s:f,s:o}", "running", task_json(st->running), "due",
	    task_json(st->due), "done", (json_int_t)st->maintenances, "last_ms", st->last_ms,
	    "last_exclusive_ms", st->last_swap_ms, "error",
	    st->error[0] ? json_string(st->error) : json_null());
	return json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:o}", "kind", cs.kind, "factory",
	                 cs.factory, "requested", st->requested, "count", (json_int_t)cs.count, "dead",
	                 (json_int_t)cs.dead, "pending", (json_int_t)st->pending, "seq",
	                 (json_int_t)cs.seq, "refine", st->refine ? json_integer(st->refine) : json_null(),
	                 "nprobe", st->nprobe ? json_integer(st->nprobe) : json_null(),
	                 "auto_threshold",
	                 st->auto_threshold ? json_integer((json_int_t)st->auto_threshold)
	                                    : json_null(),
	                 "maintenance", maint);
}

/* Every model the process holds: the served one, and during a switch of
 * models the target with its progress. */
static json_t *models_json(app *a, space *sp)
{
	migrate_stats ms;
	json_t *arr = json_array();
	migrate_get(a->mig, &ms);
	json_array_append_new(arr, json_pack("{s:s,s:i,s:s}", "id", sp->model_id, "dim", sp->dim,
	                                     "state", "serving"));
	if (ms.active)
		json_array_append_new(
		    arr, json_pack("{s:s,s:i,s:s,s:f,s:I,s:I,s:I,s:I}", "id", ms.to_id, "dim", ms.to_dim,
		                   "state", "migrating", "progress",
		                   ms.total ? (double)ms.done / (double)ms.total : 0.0, "done",
		                   (json_int_t)ms.done, "total", (json_int_t)ms.total, "failed",
		                   (json_int_t)ms.failed, "job", (json_int_t)ms.job_id));
	return arr;
}

void route_stats(http_req *r)
{
	app *a = http_req_app(r);
	space *sp = http_req_space(r);
	store_err se;
	api_err e;
	int64_t total, ready, texts, depth;
	if (store_image_count(a->st, &total, &ready, &se) != STORE_OK ||
	    store_text_count(a->st, &texts, &se) != STORE_OK ||
	    store_work_depth(a->st, &depth, &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	json_t *o = json_pack(
	    "{s:{s:I,s:I},s:{s:I},s:{s:s,s:s,s:i,s:i,s:f,s:f,s:s},s:{s:o,s:o},s:I,s:i,s:I,s:I,s:I}", "images",
	    "total",
	    (json_int_t)total, "ready", (json_int_t)ready, "texts", "total", (json_int_t)texts,
	    "model", "id", sp->model_id, "family", clip_family_name(clip_model_family(sp->model)),
	    "dim", sp->dim, "image_size", clip_model_image_size(sp->model), "logit_scale",
	    (double)clip_model_logit_scale(sp->model), "logit_bias",
	    (double)clip_model_logit_bias(sp->model), "precision",
	    clip_precision_name(clip_model_precision(sp->model)), "index", "images",
	    index_json(sp, STORE_IMAGE), "texts", index_json(sp, STORE_TEXT), "queue_depth",
	    (json_int_t)depth, "workers", a->cfg->workers, "uptime_ms",
	    (json_int_t)(clock_ms() - a->started_ms), "prompt_cache",
	    (json_int_t)encode_pool_cache_size(sp->enc), "prompt_cache_bytes",
	    (json_int_t)encode_pool_cache_bytes(sp->enc));
	json_object_set_new(o, "models", models_json(a, sp));
	http_reply_json(r, 200, o);
}
