/* routes_jobs.c: GET /v1/jobs/{id}, GET /v1/jobs. */
#include "app.h"
#include "jsonutil.h"
#include "log.h"
#include "routes.h"
#include "space.h"

/* Failed items shown by GET /v1/jobs/{id}; more set "errors_truncated". */
#define MAX_ERRORS 100

static const char *state_name(store_job_state s)
{
	switch (s) {
	case STORE_JOB_QUEUED:
		return "queued";
	case STORE_JOB_RUNNING:
		return "running";
	case STORE_JOB_DONE:
		return "done";
	}
	return "unknown";
}

/* A job as JSON, its state as the store has it: a job still being filled
 * (open) is not done even when its items so far are. */
static json_t *job_json(const store_job *j)
{
	json_t *o = route_job_json(j);
	if (o)
		json_object_set_new(o, "state", json_string(state_name(j->state)));
	return o;
}

void route_job_get(http_req *r)
{
	app *a = http_req_app(r);
	store_job j;
	store_job_error errs[MAX_ERRORS + 1];
	size_t nerr = 0;
	store_err se;
	api_err e;
	if (store_job_get(a->st, http_req_id(r), &j, &se) != STORE_OK ||
	    store_job_errors(a->st, j.id, MAX_ERRORS + 1, errs, &nerr, &se) != STORE_OK) {
		store_job_clear(&j);
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	if (j.state == STORE_JOB_DONE) {
		/* Workers commit an item's embedding and its completion together,
		 * then update the index: bring the index up to date before telling
		 * a client that the job's items can be searched. */
		for (int k = 0; k < 2; k++)
			space_sync(a, (store_kind)k);
	}
	json_t *o = job_json(&j);
	json_t *arr = json_array();
	for (size_t i = 0; i < nerr && i < MAX_ERRORS; i++)
		json_array_append_new(arr, json_pack("{s:o,s:o,s:o}", "id",
		                                     errs[i].item_id ? json_integer(errs[i].item_id)
		                                                     : json_null(),
		                                     "name", ju_string(route_shown_name(errs[i].name)), "error",
		                                     ju_string(errs[i].error)));
	json_object_set_new(o, "errors", arr);
	if (nerr > MAX_ERRORS)
		json_object_set_new(o, "errors_truncated", json_true());
	store_job_errors_clear(errs, nerr);
	store_job_clear(&j);
	http_reply_json(r, 200, o);
}

void route_jobs_list(http_req *r)
{
	app *a = http_req_app(r);
	store_job *jobs;
	size_t n;
	store_err se;
	api_err e;
	int64_t limit = 50;
	const char *q = http_req_query(r, "limit");
	if (q && ju_parse_int_str(q, "limit", 1, 1000, &limit, &e)) {
		http_reply_error(r, &e);
		return;
	}
	if (store_job_list(a->st, (int)limit, &jobs, &n, &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, job_json(&jobs[i]));
	store_jobs_free(jobs, n);
	http_reply_json(r, 200, json_pack("{s:o}", "jobs", arr));
}
