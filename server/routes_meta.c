/* routes_meta.c: what the daemon says about itself: GET /metrics
 * (Prometheus) and GET /openapi.json (the API document, server/openapi.json
 * compiled in by embed_file). */
#include "app.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"

/* Generated from server/openapi.json (server/embed_file.c). */
extern const char clipd_openapi_json[];
extern const size_t clipd_openapi_json_len;

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

void route_openapi(http_req *r)
{
	http_reply_data(r, 200, (void *)clipd_openapi_json, clipd_openapi_json_len, 0,
	                "application/json");
}
