/* errors.c: the status table and the error JSON. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"
#include "jsonutil.h"
#include "log.h"

/* The one table: (module, module code) -> HTTP status and client code. A
 * code missing here is a 500. */
static const struct status_row {
	api_domain domain;
	int code;
	int status;
	const char *name;
} status_table[] = {
	{ERR_API, API_EBADREQ, 400, "bad_request"},
	{ERR_API, API_EUNAUTH, 401, "unauthorized"},
	{ERR_API, API_EFORBIDDEN, 403, "forbidden"},
	{ERR_API, API_EHOST, 403, "host_not_allowed"},
	{ERR_API, API_EORIGIN, 403, "origin_not_allowed"},
	{ERR_API, API_ENOTFOUND, 404, "not_found"},
	{ERR_API, API_EMETHOD, 405, "method_not_allowed"},
	{ERR_API, API_ECONFLICT, 409, "conflict"},
	{ERR_API, API_ETOOBIG, 413, "payload_too_large"},
	{ERR_API, API_EUNSUPPORTED, 415, "unsupported_media_type"},
	{ERR_API, API_EUNDECODABLE, 422, "undecodable_image"},
	{ERR_API, API_EQUEUEFULL, 503, "queue_full"},
	{ERR_API, API_EUNAVAIL, 503, "unavailable"},
	{ERR_API, API_ETIMEOUT, 504, "timeout"},
	{ERR_API, API_EINTERNAL, 500, "internal"},
	{ERR_API, API_EIO, 500, "internal"},
	{ERR_API, API_ENOMEM, 500, "out_of_memory"},

	{ERR_STORE, STORE_ENOTFOUND, 404, "not_found"},
	{ERR_STORE, STORE_EEXISTS, 409, "conflict"},
	{ERR_STORE, STORE_EINVAL, 400, "bad_request"},
	{ERR_STORE, STORE_EBUSY, 503, "busy"},
	{ERR_STORE, STORE_ESTALE, 503, "busy"},
	{ERR_STORE, STORE_ENOMEM, 500, "out_of_memory"},

	{ERR_CLIP, CLIP_EINVAL, 400, "bad_request"},
	{ERR_CLIP, CLIP_EIMAGE, 422, "undecodable_image"},
	{ERR_CLIP, CLIP_ETOOBIG, 413, "image_too_large"},
	{ERR_CLIP, CLIP_ETEXT, 400, "bad_text"},
	{ERR_CLIP, CLIP_ELIMIT, 422, "decode_limit"},
	{ERR_CLIP, CLIP_ENOMEM, 500, "out_of_memory"},

	{ERR_VIDX, VIDX_EINVAL, 400, "bad_request"},
	{ERR_VIDX, VIDX_ENOMEM, 500, "out_of_memory"},
};

static const char *const domain_names[] = {"server", "store", "model", "index"};

#define MAX_SECRETS 8
/* Written once at start-up before any thread exists, read-only after. */
static const char *secrets[MAX_SECRETS];
static int nsecrets;

void api_err_set_secrets(const char *const *strings, int n)
{
	nsecrets = 0;
	for (int i = 0; i < n && nsecrets < MAX_SECRETS; i++)
		if (strings[i] && strlen(strings[i]) > 1)
			secrets[nsecrets++] = strings[i];
}

int api_fail(api_err *err, api_code code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->domain = ERR_API;
		err->code = code;
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
		/* Messages quote client bytes (a URL, a file name): they must stay
		 * valid UTF-8 for the JSON reply, also where vsnprintf cut them. */
		ju_utf8_fix(err->msg, sizeof err->msg);
	}
	return code;
}

static int wrap(api_err *err, api_domain d, int code, const char *msg)
{
	if (err) {
		err->domain = d;
		err->code = code;
		snprintf(err->msg, sizeof err->msg, "%s", msg);
		ju_utf8_fix(err->msg, sizeof err->msg);
	}
	return code ? code : -1;
}

int api_from_store(api_err *err, const store_err *se)
{
	return wrap(err, ERR_STORE, se->code, se->msg);
}

int api_from_clip(api_err *err, const clip_err *ce)
{
	return wrap(err, ERR_CLIP, ce->code, ce->msg);
}

int api_from_vidx(api_err *err, const vidx_err *ve)
{
	return wrap(err, ERR_VIDX, ve->code, ve->msg);
}

int api_err_status(const api_err *err, const char **name)
{
	for (size_t i = 0; i < sizeof status_table / sizeof *status_table; i++) {
		const struct status_row *r = &status_table[i];
		if (r->domain == err->domain && r->code == err->code) {
			if (name)
				*name = r->name;
			return r->status;
		}
	}
	if (name)
		*name = "internal";
	return 500;
}

/* Copies src into dst replacing every secret with "<dir>". */
static void scrub(char *dst, size_t size, const char *src)
{
	size_t o = 0;
	while (*src && o + 1 < size) {
		int hit = 0;
		for (int i = 0; i < nsecrets; i++) {
			size_t n = strlen(secrets[i]);
			if (strncmp(src, secrets[i], n) == 0) {
				const char *rep = "<dir>";
				for (const char *p = rep; *p && o + 1 < size; p++)
					dst[o++] = *p;
				src += n;
				hit = 1;
				break;
			}
		}
		if (!hit)
			dst[o++] = *src++;
	}
	dst[o] = 0;
}

json_t *api_err_json(const api_err *err, int *status)
{
	const char *name;
	char msg[sizeof err->msg + 64];
	int st = api_err_status(err, &name);
	if (st >= 500 && st != 503) {
		log_error("%s error %d: %s", domain_names[err->domain], err->code, err->msg);
		snprintf(msg, sizeof msg, "internal server error (details are in the server log)");
	} else {
		scrub(msg, sizeof msg, err->msg);
		ju_utf8_fix(msg, sizeof msg);
	}
	*status = st;
	return json_pack("{s:{s:s,s:s}}", "error", "code", name, "message", msg);
}
