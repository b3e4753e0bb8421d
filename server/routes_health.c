/* routes_health.c: the probes: GET /healthz (the process answers) and
 * GET /readyz (ready for traffic; 503 once shutting down). */
#include <stdatomic.h>

#include "app.h"
#include "routes.h"

void route_healthz(http_req *r)
{
	http_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void route_readyz(http_req *r)
{
	app *a = http_req_app(r);
	/* The server listens only once the model and both indexes are loaded. */
	if (atomic_load(&a->stopping)) {
		api_err e;
		api_fail(&e, API_EUNAVAIL, "the server is shutting down");
		http_reply_error(r, &e);
		return;
	}
	http_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
}
