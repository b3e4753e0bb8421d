/* routes_openapi.c: GET /openapi.json, the API document (server/openapi.json
 * compiled in by embed_file). */
#include "routes.h"

/* Generated from server/openapi.json (tools/embed_file.c). */
extern const char clipd_openapi_json[];
extern const size_t clipd_openapi_json_len;

void route_openapi(http_req *r)
{
	http_reply_data(r, 200, (void *)clipd_openapi_json, clipd_openapi_json_len, 0,
	                "application/json");
}
