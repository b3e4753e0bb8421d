/* routes_jobs.c: GET /v1/jobs/{id}, GET /v1/jobs. */
#include "app.h"
#include "jsonutil.h"
#include "routes.h"

void route_job_get(http_req *r)
{
	app *a = http_req_app(r);
	store_job j;
	store_err se;
	api_err e;
	if (store_job_get(a->st, http_req_id(r), &j, &se) != STORE_OK) {
		api_from_store(&e, &se);
		http_reply_error(r, &e);
		return;
	}
	http_reply_json(r, 200, route_job_json(&j));
	store_job_clear(&j);
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
		json_array_append_new(arr, route_job_json(&jobs[i]));
	store_jobs_free(jobs, n);
	http_reply_json(r, 200, json_pack("{s:o}", "jobs", arr));
}
