/* routes_texts.c: the text collection: add, read, delete. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "ingest.h"
#include "jsonutil.h"
#include "log.h"
#include "routes.h"
#include "space.h"
#include "worker.h"

#define MAX_TEXTS 10000
#define MAX_TEXT_BYTES 65536

void route_texts_add(http_req *r)
{
	app *a = http_req_app(r);
	json_t *body = NULL, *texts, *ids = NULL;
	api_err e;
	store_err se;
	int64_t job_id = 0;
	char **metas = NULL;
	const char **strs = NULL;
	int64_t *idv = NULL;
	size_t n = 0, i;
	json_t *v;

	if (http_req_json(r, &body, &e))
		goto fail;
	texts = json_object_get(body, "texts");
	if (!texts) {
		api_fail(&e, API_EBADREQ, "missing field 'texts' (an array of {\"text\", \"meta\"})");
		goto fail;
	}
	if (!json_is_array(texts) || json_array_size(texts) == 0) {
		api_fail(&e, API_EBADREQ, "field 'texts' must be a non-empty array");
		goto fail;
	}
	n = json_array_size(texts);
	if (n > MAX_TEXTS) {
		api_fail(&e, API_EBADREQ, "field 'texts' has %zu entries, at most %d are allowed", n,
		         MAX_TEXTS);
		goto fail;
	}
	if (!(metas = calloc(n, sizeof *metas)) || !(strs = calloc(n, sizeof *strs)) ||
	    !(idv = calloc(n, sizeof *idv))) {
		api_fail(&e, API_ENOMEM, "out of memory");
		goto fail;
	}
	/* Validate everything before storing anything. */
	json_array_foreach(texts, i, v) {
		const char *t;
		json_t *meta = NULL;
		if (json_is_string(v)) {
			t = json_string_value(v);
		} else if (json_is_object(v)) {
			json_t *tv = json_object_get(v, "text");
			if (!json_is_string(tv)) {
				api_fail(&e, API_EBADREQ, "texts[%zu].text must be a string", i);
				goto fail;
			}
			t = json_string_value(tv);
			meta = json_object_get(v, "meta");
			if (meta && !json_is_null(meta) && !json_is_object(meta)) {
				api_fail(&e, API_EBADREQ, "texts[%zu].meta must be a JSON object", i);
				goto fail;
			}
			if (meta && json_is_object(meta)) {
				char what[48];
				snprintf(what, sizeof what, "texts[%zu].meta", i);
				if (ju_meta(meta, what, &metas[i], &e))
					goto fail;
			}
		} else {
			api_fail(&e, API_EBADREQ, "texts[%zu] must be a string or {\"text\", \"meta\"}", i);
			goto fail;
		}
		if (strlen(t) > MAX_TEXT_BYTES) {
			api_fail(&e, API_EBADREQ, "texts[%zu] is longer than %d bytes", i, MAX_TEXT_BYTES);
			goto fail;
		}
		strs[i] = t;
	}
	if (ingest_queue_check(a, (int64_t)n, &e))
		goto fail;
	/* The job is sealed and filled in the next transaction, before its id
	 * is known to anyone: every text is stored and queued, or none is. */
	if (store_job_create(a->st, "texts", &job_id, &se) != STORE_OK ||
	    store_texts_insert_queued(a->st, n, strs, (const char *const *)metas, job_id, idv, &se) !=
	        STORE_OK) {
		api_from_store(&e, &se);
		goto fail;
	}
	ids = json_array();
	for (i = 0; i < n; i++)
		json_array_append_new(ids, json_integer(idv[i]));
	worker_pool_kick(a->workers);
	http_reply_json(r, 202, json_pack("{s:I,s:o,s:s}", "job_id", (json_int_t)job_id, "ids", ids,
	                                  "status", "pending"));
	ids = NULL;
	goto out;
fail:
	http_reply_error(r, &e);
out:
	for (size_t k = 0; metas && k < n; k++)
		free(metas[k]);
	free(metas);
	free(strs);
	free(idv);
	json_decref(ids);
	json_decref(body);
}

void route_text_get(http_req *r)
{
	app *a = http_req_app(r);
	store_text t;
	store_err se;
	api_err e;
	if (store_text_get(a->st, http_req_id(r), &t, &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	http_reply_json(r, 200, route_text_json(&t));
	store_text_clear(&t);
}

void route_text_delete(http_req *r)
{
	app *a = http_req_app(r);
	store_err se;
	api_err e;
	if (store_text_delete(a->st, http_req_id(r), &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	space_sync(a, STORE_TEXT);
	http_reply_json(r, 200, json_pack("{s:I,s:b}", "id", (json_int_t)http_req_id(r), "deleted", 1));
}
