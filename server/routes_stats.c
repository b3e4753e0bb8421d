/* routes_stats.c: the daemon's counts and state: GET /v1/stats (JSON: items,
 * model, indexes, queue, prompt cache) and GET /metrics (Prometheus: the
 * same counts plus the request and encode counters of metrics.c). */
#include "app.h"
#include "clock.h"
#include "encode_pool.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"

void route_metrics(http_req *r)
{
	app *a = http_req_app(r);
	metrics_gauges g = {.version = CLIPD_VERSION, .model_id = a->model_id};
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
		coll_get_stats(a->coll, (store_kind)k, &cs);
		g.index_vectors[k] = (int64_t)cs.count;
	}
	char *text = metrics_render(&g, &len);
	if (!text) {
		api_fail(&e, API_ENOMEM, "out of memory");
		http_reply_error(r, &e);
		return;
	}
	http_reply_data(r, 200, text, len, 1, "text/plain; version=0.0.4; charset=utf-8");
}

static json_t *index_json(app *a, store_kind kind)
{
	coll_stats cs;
	coll_get_stats(a->coll, kind, &cs);
	return json_pack("{s:s,s:s,s:I,s:I,s:I}", "kind", cs.kind, "factory", cs.factory, "count",
	                 (json_int_t)cs.count, "dead", (json_int_t)cs.dead, "seq", (json_int_t)cs.seq);
}

void route_stats(http_req *r)
{
	app *a = http_req_app(r);
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
	    "model", "id", a->model_id, "family", clip_family_name(clip_model_family(a->model)), "dim",
	    a->dim, "image_size", clip_model_image_size(a->model), "logit_scale",
	    (double)clip_model_logit_scale(a->model), "logit_bias",
	    (double)clip_model_logit_bias(a->model), "precision",
	    clip_precision_name(clip_model_precision(a->model)), "index", "images",
	    index_json(a, STORE_IMAGE), "texts", index_json(a, STORE_TEXT), "queue_depth",
	    (json_int_t)depth, "workers", a->cfg->workers, "uptime_ms",
	    (json_int_t)(clock_ms() - a->started_ms), "prompt_cache",
	    (json_int_t)encode_pool_cache_size(a->enc), "prompt_cache_bytes",
	    (json_int_t)encode_pool_cache_bytes(a->enc));
	http_reply_json(r, 200, o);
}
