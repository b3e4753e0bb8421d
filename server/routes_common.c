/* routes_common.c: helpers the routes share: JSON of store rows, status
 * names, the file name a client is shown. */
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "jsonutil.h"
#include "routes.h"

const char *route_status_name(store_status s)
{
	switch (s) {
	case STORE_PENDING:
		return "pending";
	case STORE_READY:
		return "ready";
	case STORE_FAILED:
		return "failed";
	}
	return "unknown";
}

/* The stored meta text as JSON; {} when it cannot be parsed. */
static json_t *meta_json(const char *text)
{
	json_t *j = text ? json_loads(text, 0, NULL) : NULL;
	return j ? j : json_object();
}

const char *route_shown_name(const char *name)
{
	/* Server files are stored by their path under their root; only rows
	 * from before that hold an absolute path. */
	if (name && name[0] == '/') {
		const char *slash = strrchr(name, '/');
		return slash[1] ? slash + 1 : name;
	}
	return name;
}

static json_t *opt_string(const char *s)
{
	return s ? ju_string(s) : json_null();
}

/* What the file says about itself (server/exif.c): null where unknown; gps
 * and camera are null when none of their members is known. */
static void exif_json(json_t *o, const store_exif *e)
{
	json_object_set_new(o, "taken", opt_string(e->taken));
	json_object_set_new(o, "gps", e->has_gps ? json_pack("{s:f,s:f}", "lat", e->gps_lat, "lon",
	                                                     e->gps_lon)
	                                         : json_null());
	json_object_set_new(o, "camera",
	                    e->camera_make || e->camera_model || e->lens
	                            ? json_pack("{s:o,s:o,s:o}", "make", opt_string(e->camera_make),
	                                        "model", opt_string(e->camera_model), "lens",
	                                        opt_string(e->lens))
	                            : json_null());
	json_object_set_new(o, "orientation",
	                    e->orientation ? json_integer(e->orientation) : json_null());
}

json_t *route_image_json(const store_image *img)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_integer(img->id));
	json_object_set_new(o, "kind", json_string("image"));
	json_object_set_new(o, "sha256", json_string(img->sha256));
	json_object_set_new(o, "filename",
	                    img->filename ? ju_string(route_shown_name(img->filename)) : json_null());
	json_object_set_new(o, "mime", json_string(img->mime ? img->mime : ""));
	json_object_set_new(o, "width", json_integer(img->width));
	json_object_set_new(o, "height", json_integer(img->height));
	json_object_set_new(o, "bytes", json_integer(img->bytes));
	json_object_set_new(o, "meta", meta_json(img->meta));
	json_object_set_new(o, "status", json_string(route_status_name(img->status)));
	if (img->error)
		json_object_set_new(o, "error", ju_string(img->error));
	json_object_set_new(o, "created_ms", json_integer(img->created_ms));
	json_object_set_new(o, "updated_ms", json_integer(img->updated_ms));
	json_object_set_new(o, "thumbnail_url",
	                    json_sprintf("/v1/images/%lld/thumbnail", (long long)img->id));
	exif_json(o, &img->exif);
	return o;
}

json_t *route_text_json(const store_text *t)
{
	json_t *o = json_object();
	json_object_set_new(o, "id", json_integer(t->id));
	json_object_set_new(o, "kind", json_string("text"));
	json_object_set_new(o, "text", json_string(t->text ? t->text : ""));
	json_object_set_new(o, "meta", meta_json(t->meta));
	json_object_set_new(o, "status", json_string(route_status_name(t->status)));
	json_object_set_new(o, "created_ms", json_integer(t->created_ms));
	return o;
}

json_t *route_job_json(const store_job *j)
{
	/* A job with no items (every file a duplicate) is done, though the
	 * store leaves it queued. */
	const char *state = j->total > 0 && j->done + j->failed >= j->total ? "done"
	                    : j->total == 0                                  ? "done"
	                    : j->state == STORE_JOB_RUNNING                  ? "running"
	                    : j->state == STORE_JOB_DONE                     ? "done"
	                                                                     : "queued";
	return json_pack("{s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I}", "id", (json_int_t)j->id, "kind",
	                 j->kind ? j->kind : "", "state", state, "total", (json_int_t)j->total, "done",
	                 (json_int_t)j->done, "failed", (json_int_t)j->failed, "created_ms",
	                 (json_int_t)j->created_ms, "updated_ms", (json_int_t)j->updated_ms);
}
