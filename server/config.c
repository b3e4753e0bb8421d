/* config.c: command line, environment, defaults. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

enum opt_type { OPT_STR, OPT_INT, OPT_LIST, OPT_FLAG };

static const struct opt {
	const char *name;   /* flag without "--"; env is CLIPD_ + upper-case with _ */
	enum opt_type type;
	const char *arg;
	const char *help;
} opts[] = {
	{"model", OPT_STR, "DIR", "Hugging Face CLIP checkpoint directory (required)"},
	{"data", OPT_STR, "DIR", "data directory: database, blobs, index snapshots (required)"},
	{"listen", OPT_STR, "HOST:PORT", "address to listen on (default 127.0.0.1:8080; port 0 picks a free one)"},
	{"api-key", OPT_STR, "KEY", "require Authorization: Bearer KEY on requests that change data (visible in ps: prefer --api-key-file)"},
	{"api-key-file", OPT_STR, "FILE", "read the API key from the first line of FILE"},
	{"api-key-reads", OPT_FLAG, NULL, "require the API key on reads (GET, search, classify, embed) too"},
	{"workers", OPT_INT, "N", "background indexing threads (default: cores / 2, at least 1)"},
	{"batch", OPT_INT, "N", "images per encoder batch (default 16)"},
	{"encoders", OPT_INT, "N", "concurrent request-time encodes (default 2)"},
	{"index", OPT_STR, "FACTORY", "index kind: exact, hnsw, ivfpq or a FAISS factory string (default exact)"},
	{"allow-root", OPT_LIST, "DIR", "allow POST /v1/ingest of server files under DIR (repeatable; env: colon-separated)"},
	{"max-body-mb", OPT_INT, "N", "largest request body in MiB (default 64)"},
	{"max-pixels", OPT_INT, "N", "largest image in pixels, width*height (default 100000000)"},
	{"max-queue", OPT_INT, "N", "pending items before uploads get 503 (default 100000)"},
	{"timeout", OPT_INT, "SECONDS", "idle connection timeout (default 30)"},
	{"max-connections", OPT_INT, "N", "concurrent connections (default 64)"},
	{"log-level", OPT_STR, "LEVEL", "error, warn, info or debug (default info)"},
	{"help", OPT_FLAG, NULL, "print this help"},
};
#define NOPTS (sizeof opts / sizeof *opts)

static void usage(FILE *f)
{
	fputs("usage: clipd --model DIR --data DIR [options]\n"
	      "Serves CLIP image-text search over HTTP. Every option can also be given\n"
	      "as an environment variable: --max-body-mb N is CLIPD_MAX_BODY_MB=N.\n"
	      "The command line wins over the environment.\n\noptions:\n",
	      f);
	for (size_t i = 0; i < NOPTS; i++) {
		char left[64];
		snprintf(left, sizeof left, "--%s%s%s", opts[i].name, opts[i].arg ? " " : "",
		         opts[i].arg ? opts[i].arg : "");
		fprintf(f, "  %-26s %s\n", left, opts[i].help);
	}
}

static int fail(char *msg, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *msg, size_t size, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, size, fmt, ap);
	va_end(ap);
	return -1;
}

struct raw {
	const char *val[NOPTS];
	const char *list[64];   /* --allow-root values */
	int nlist;
	int help;
};

static int parse_int(const char *name, const char *s, int64_t min, int64_t max, int64_t *out,
                     char *msg, size_t size)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return fail(msg, size, "--%s: '%s' is not an integer from %lld to %lld", name, s,
		            (long long)min, (long long)max);
	*out = v;
	return 0;
}

static int get_int(const struct raw *r, const char *name, int64_t def, int64_t min, int64_t max,
                   int64_t *out, char *msg, size_t size)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (!strcmp(opts[i].name, name)) {
			if (!r->val[i]) {
				*out = def;
				return 0;
			}
			return parse_int(name, r->val[i], min, max, out, msg, size);
		}
	abort();
}

static const char *get_str(const struct raw *r, const char *name)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (!strcmp(opts[i].name, name))
			return r->val[i];
	abort();
}

static int parse_listen(config *cfg, const char *s, char *msg, size_t size)
{
	const char *colon = strrchr(s, ':');
	char host[64];
	if (!colon || colon == s)
		return fail(msg, size, "--listen: '%s' is not HOST:PORT", s);
	size_t hl = (size_t)(colon - s);
	if (s[0] == '[' && colon[-1] == ']') {
		s++;
		hl -= 2;
	}
	if (hl >= sizeof host)
		return fail(msg, size, "--listen: host is too long");
	memcpy(host, s, hl);
	host[hl] = 0;
	unsigned char buf[16];
	if (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1)
		return fail(msg, size, "--listen: '%s' is not a numeric IPv4 or IPv6 address", host);
	int64_t port = 0;
	if (parse_int("listen", colon + 1, 0, 65535, &port, msg, size))
		return -1;
	snprintf(cfg->listen_host, sizeof cfg->listen_host, "%s", host);
	cfg->listen_port = (int)port;
	return 0;
}

static char *read_key_file(const char *path, char *msg, size_t size)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	if (!f) {
		fail(msg, size, "--api-key-file: cannot open %s: %s", path, strerror(errno));
		return NULL;
	}
	char *ok = fgets(line, sizeof line, f);
	fclose(f);
	if (!ok) {
		fail(msg, size, "--api-key-file: %s is empty", path);
		return NULL;
	}
	line[strcspn(line, "\r\n")] = 0;
	if (!line[0]) {
		fail(msg, size, "--api-key-file: the first line of %s is empty", path);
		return NULL;
	}
	return strdup(line);
}

static int add_root(config *cfg, const char *dir, char *msg, size_t size)
{
	char *real = realpath(dir, NULL);
	if (!real)
		return fail(msg, size, "--allow-root: %s: %s", dir, strerror(errno));
	char **p = realloc(cfg->allow_roots, (size_t)(cfg->n_allow_roots + 1) * sizeof *p);
	if (!p) {
		free(real);
		return fail(msg, size, "out of memory");
	}
	cfg->allow_roots = p;
	cfg->allow_roots[cfg->n_allow_roots++] = real;
	return 0;
}

static void env_name(const char *opt, char *buf, size_t size)
{
	size_t o = (size_t)snprintf(buf, size, "CLIPD_");
	for (; *opt && o + 1 < size; opt++)
		buf[o++] = *opt == '-' ? '_' : (char)toupper((unsigned char)*opt);
	buf[o] = 0;
}

int config_parse(config *cfg, int argc, char **argv, FILE *out, char *msg, size_t size)
{
	struct raw r = {0};
	char env[64];
	memset(cfg, 0, sizeof *cfg);

	for (size_t i = 0; i < NOPTS; i++) {
		if (!strcmp(opts[i].name, "help"))
			continue;
		env_name(opts[i].name, env, sizeof env);
		const char *v = getenv(env);
		if (v && *v)
			r.val[i] = v;
	}
	int cli_roots = 0;
	for (int a = 1; a < argc; a++) {
		const char *arg = argv[a], *val = NULL;
		if (strncmp(arg, "--", 2) != 0)
			return fail(msg, size, "unexpected argument '%s' (see --help)", arg);
		arg += 2;
		size_t nl = strcspn(arg, "=");
		size_t i;
		for (i = 0; i < NOPTS; i++)
			if (strlen(opts[i].name) == nl && !strncmp(opts[i].name, arg, nl))
				break;
		if (i == NOPTS)
			return fail(msg, size, "unknown option '%s' (see --help)", argv[a]);
		if (opts[i].type == OPT_FLAG) {
			if (!strcmp(opts[i].name, "help"))
				r.help = 1;
			else
				r.val[i] = "1";
			continue;
		}
		if (arg[nl] == '=')
			val = arg + nl + 1;
		else if (a + 1 < argc)
			val = argv[++a];
		else
			return fail(msg, size, "--%s needs a value", opts[i].name);
		if (opts[i].type == OPT_LIST) {
			if (r.nlist == (int)(sizeof r.list / sizeof *r.list))
				return fail(msg, size, "--%s given too many times", opts[i].name);
			r.list[r.nlist++] = val;
			cli_roots = 1;
		} else {
			r.val[i] = val;
		}
	}
	if (r.help) {
		usage(out);
		return 1;
	}

	const char *model = get_str(&r, "model"), *data = get_str(&r, "data");
	if (!model || !data)
		return fail(msg, size, "--model DIR and --data DIR are required (see --help)");
	cfg->model_dir = strdup(model);
	cfg->data_dir = strdup(data);
	const char *listen = get_str(&r, "listen");
	cfg->listen = strdup(listen ? listen : "127.0.0.1:8080");
	if (parse_listen(cfg, cfg->listen, msg, size))
		return -1;

	const char *key = get_str(&r, "api-key"), *key_file = get_str(&r, "api-key-file");
	if (key && key_file)
		return fail(msg, size, "give --api-key or --api-key-file, not both");
	if (key)
		cfg->api_key = strdup(key);
	else if (key_file && !(cfg->api_key = read_key_file(key_file, msg, size)))
		return -1;

	const char *reads = get_str(&r, "api-key-reads");
	cfg->api_key_reads = reads && strcmp(reads, "0") != 0;
	if (cfg->api_key_reads && !cfg->api_key)
		return fail(msg, size, "--api-key-reads needs --api-key or --api-key-file");

	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	if (cores < 1)
		cores = 1;
	int64_t v;
	if (get_int(&r, "workers", cores / 2 > 0 ? cores / 2 : 1, 1, 256, &v, msg, size))
		return -1;
	cfg->workers = (int)v;
	if (get_int(&r, "batch", 16, 1, 256, &v, msg, size))
		return -1;
	cfg->batch = (int)v;
	if (get_int(&r, "encoders", 2, 1, 64, &v, msg, size))
		return -1;
	cfg->encoders = (int)v;
	if (get_int(&r, "max-body-mb", 64, 1, 1 << 20, &v, msg, size))
		return -1;
	cfg->max_body = v << 20;
	if (get_int(&r, "max-pixels", 100000000, 1, INT64_MAX / 2, &v, msg, size))
		return -1;
	cfg->max_pixels = v;
	if (get_int(&r, "max-queue", 100000, 1, INT64_MAX / 2, &v, msg, size))
		return -1;
	cfg->max_queue = v;
	if (get_int(&r, "timeout", 30, 1, 3600, &v, msg, size))
		return -1;
	cfg->timeout_s = (int)v;
	if (get_int(&r, "max-connections", 64, 1, 10000, &v, msg, size))
		return -1;
	cfg->max_conns = (int)v;
	cfg->wait_max_s = 60;

	const char *factory = get_str(&r, "index");
	cfg->index_factory = strdup(factory ? factory : "exact");
	const char *lvl = get_str(&r, "log-level");
	cfg->log_level = lvl ? log_level_parse(lvl) : LOG_LVL_INFO;
	if (cfg->log_level < 0)
		return fail(msg, size, "--log-level: '%s' is not error, warn, info or debug", lvl);

	if (cli_roots) {
		for (int i = 0; i < r.nlist; i++)
			if (add_root(cfg, r.list[i], msg, size))
				return -1;
	} else if (get_str(&r, "allow-root")) {
		char *copy = strdup(get_str(&r, "allow-root")), *save = NULL;
		for (char *tok = strtok_r(copy, ":", &save); tok; tok = strtok_r(NULL, ":", &save))
			if (add_root(cfg, tok, msg, size)) {
				free(copy);
				return -1;
			}
		free(copy);
	}
	if (!cfg->model_dir || !cfg->data_dir || !cfg->listen || !cfg->index_factory)
		return fail(msg, size, "out of memory");
	return 0;
}

void config_free(config *cfg)
{
	free(cfg->model_dir);
	free(cfg->data_dir);
	free(cfg->listen);
	free(cfg->api_key);
	free(cfg->index_factory);
	for (int i = 0; i < cfg->n_allow_roots; i++)
		free(cfg->allow_roots[i]);
	free(cfg->allow_roots);
	memset(cfg, 0, sizeof *cfg);
}
