/*
 * config.c: the daemon's settings from the command line, the environment,
 * an optional config file, and defaults, in that order of precedence.
 *
 * Every setting is one entry of opts[]: --name on the command line,
 * CLIPD_NAME in the environment, "name = value" in the file given by
 * --config / CLIPD_CONFIG. Values are collected as strings with the place
 * they came from (struct raw), the strongest source winning, and only then
 * parsed, so an error names its source: "--workers", "CLIPD_WORKERS" or
 * "/etc/clipd/clipd.conf:12: workers".
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clip.h"
#include "config.h"
#include "log.h"

enum opt_type { OPT_STR, OPT_INT, OPT_LIST, OPT_FLAG };

static const struct opt {
	const char *name;   /* flag without "--"; env is CLIPD_ + upper-case with _ */
	enum opt_type type;
	const char *arg;
	int path;           /* a path: relative ones in a config file are taken from its folder */
	int list;           /* OPT_LIST: its slot in struct raw's lists, from 1 */
	const char *help;
} opts[] = {
	{"config", OPT_STR, "FILE", 1, 0, "read settings from FILE: \"key = value\" lines, keys are these option names (see deploy/clipd.conf.example)"},
	{"model", OPT_STR, "DIR", 1, 0, "Hugging Face CLIP checkpoint directory (required)"},
	{"data", OPT_STR, "DIR", 1, 0, "data directory: database, blobs, index snapshots (required)"},
	{"old-model", OPT_STR, "DIR", 1, 0, "when --data was built with another model: that model's checkpoint directory, loaded to serve searches while everything is embedded again with --model (default: the directory recorded in the data directory)"},
	{"listen", OPT_STR, "HOST:PORT", 0, 0, "address to listen on (default 127.0.0.1:8080; port 0 picks a free one)"},
	{"api-key", OPT_STR, "KEY", 0, 0, "require Authorization: Bearer KEY on requests that change data (visible in ps: prefer --api-key-file)"},
	{"api-key-file", OPT_STR, "FILE", 1, 0, "read the API key from the first line of FILE"},
	{"api-key-reads", OPT_FLAG, NULL, 0, 0, "require the API key on reads (GET, search, classify, embed) too"},
	{"workers", OPT_INT, "N", 0, 0, "background indexing threads (default: cores / 2, at least 1)"},
	{"batch", OPT_INT, "N", 0, 0, "images per encoder batch (default 16)"},
	{"encoders", OPT_INT, "N", 0, 0, "concurrent request-time encodes (default 2)"},
	{"index-auto-threshold", OPT_INT, "N", 0, 0, "vectors at which --index auto leaves exact search for IVF (default: 128k x 512 / dimension)"},
	{"index-nprobe", OPT_INT, "N", 0, 0, "IVF (and auto once it is IVF): inverted lists searched per query (default: an eighth of the lists, at least 32)"},
	{"index-refine", OPT_INT, "N", 0, 0, "compressed kinds (ivfpq, auto): candidates per result re-ranked with the exact vectors, 0 for none (default 100; at most 10,000 candidates a query)"},
	{"index", OPT_STR, "FACTORY", 0, 0, "index kind: auto, exact, hnsw, ivfpq or a FAISS factory string (default auto: exact while small, then re-ranked IVF-PQ trained in the background)"},
	{"allow-root", OPT_LIST, "DIR", 1, 1, "allow POST /v1/ingest of server files under DIR (repeatable; env: colon-separated)"},
	{"watch", OPT_LIST, "DIR", 1, 2, "ingest new and changed images under DIR, remove deleted ones (repeatable; env: colon-separated)"},
	{"rescan-seconds", OPT_INT, "N", 0, 0, "full rescan of the --watch directories every N seconds (default 300)"},
	{"max-body-mb", OPT_INT, "N", 0, 0, "largest request body in MiB (default 64)"},
	{"max-pixels", OPT_INT, "N", 0, 0, "largest image in pixels, width*height (default 100000000)"},
	{"max-queue", OPT_INT, "N", 0, 0, "pending items before uploads get 503 (default 100000)"},
	{"timeout", OPT_INT, "SECONDS", 0, 0, "idle connection timeout (default 30)"},
	{"header-timeout", OPT_INT, "SECONDS", 0, 0, "a request's head (request line and headers) must arrive within SECONDS of the connection opening or of the previous reply (default 10)"},
	{"max-connections", OPT_INT, "N", 0, 0, "concurrent connections (default 1024, lowered to fit the descriptor limit)"},
	{"max-connections-per-ip", OPT_INT, "N", 0, 0, "concurrent connections from one client address (default 64)"},
	{"allow-host", OPT_STR, "NAMES", 0, 0, "comma-separated host names accepted in the Host header besides IP addresses and localhost (for a reverse proxy or a LAN name; others get 403 against DNS rebinding)"},
	{"allow-origin", OPT_STR, "ORIGINS", 0, 0, "comma-separated origins (scheme://host[:port]) allowed to send writes besides the page's own (default none)"},
	{"thumb-cache-mb", OPT_INT, "N", 0, 0, "disk space for cached thumbnails in MiB; past it the oldest are removed (default 512)"},
	{"thumb-wait-ms", OPT_INT, "MS", 0, 0, "longest wait for a free thumbnail maker before a 503 (default 10000)"},
	{"max-decodes", OPT_INT, "N", 0, 0, "images decoded at once for requests (searches, classify, embed); more wait (default: the number of cores, at least 2)"},
	{"decode-wait-ms", OPT_INT, "MS", 0, 0, "longest wait for a free request decode before a 503 (default 5000)"},
	{"migration-pause-ms", OPT_INT, "MS", 0, 0, "while switching to another model (--old-model): pause after every batch of 8 items re-embedded, to leave the cores to requests and ingest (default 0: only its lower priority)"},
	{"fast-decode", OPT_FLAG, NULL, 0, 0, "decode JPEGs much larger than the model's input shrunk on load (libjpeg's DCT scaling, to at least 3x the input side), then preprocess as usual: 2-3x faster for camera photos, embeddings slightly off the exact path (see README; default off)"},
	{"precision", OPT_STR, "P", 0, 0, "number format of the model's products: auto, f32, bf16 or int8 (default auto: bf16 where the CPU has AVX512-BF16 or AMX, else f32)"},
	{"log-level", OPT_STR, "LEVEL", 0, 0, "error, warn, info or debug (default info)"},
	{"help", OPT_FLAG, NULL, 0, 0, "print this help"},
};
#define NOPTS (sizeof opts / sizeof *opts)
#define NLISTS 2        /* the OPT_LIST options: allow-root, watch */
#define MAX_LISTED 64   /* directories per list and source */

static void usage(FILE *f)
{
	fputs("usage: clipd --model DIR --data DIR [options]\n"
	      "       clipd --config FILE [options]\n"
	      "Serves CLIP image-text search over HTTP.\n\n"
	      "Every option can also be given as an environment variable (--max-body-mb N\n"
	      "is CLIPD_MAX_BODY_MB=N; flags take 1 or 0) and as a line of the config file\n"
	      "(max-body-mb = 64; flags take true or false; allow-root and watch may\n"
	      "repeat; lines starting with # are comments; relative paths are taken from\n"
	      "the file's folder). The command line wins over the environment, which wins\n"
	      "over the config file, which wins over the defaults.\n\noptions:\n",
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

/* Where a value came from; a stronger source overrides a weaker one. */
enum source { SRC_NONE, SRC_FILE, SRC_ENV, SRC_CLI };

struct dirlist {
	const char *dir[MAX_LISTED];
	const char *who[MAX_LISTED];
	int n;
};

struct raw {
	const char *val[NOPTS];
	enum source src[NOPTS];
	const char *who[NOPTS];     /* the value's name in messages */
	int file_line[NOPTS];       /* line of the value in the config file, 0: none */
	struct dirlist lists[NLISTS][SRC_CLI + 1];  /* OPT_LIST values per list and source */
	int help;
	char **owned;               /* strings this parse allocated, freed at the end */
	size_t nowned, capowned;
};

/* Registers s (malloc'd, may be NULL) to be freed with r; returns s. */
static char *keep(struct raw *r, char *s)
{
	if (!s)
		return NULL;
	if (r->nowned == r->capowned) {
		size_t cap = r->capowned ? 2 * r->capowned : 32;
		char **p = realloc(r->owned, cap * sizeof *p);
		if (!p) {
			free(s);
			return NULL;
		}
		r->owned = p;
		r->capowned = cap;
	}
	r->owned[r->nowned++] = s;
	return s;
}

static char *keepf(struct raw *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *keepf(struct raw *r, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return keep(r, s);
}

static void raw_free(struct raw *r)
{
	for (size_t i = 0; i < r->nowned; i++)
		free(r->owned[i]);
	free(r->owned);
}

static size_t opt_index(const char *name)
{
	for (size_t i = 0; i < NOPTS; i++)
		if (!strcmp(opts[i].name, name))
			return i;
	abort();
}

static int parse_int(const char *who, const char *s, int64_t min, int64_t max, int64_t *out,
                     char *msg, size_t size)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return fail(msg, size, "%s: '%s' is not an integer from %lld to %lld", who, s,
		            (long long)min, (long long)max);
	*out = v;
	return 0;
}

static int get_int(const struct raw *r, const char *name, int64_t def, int64_t min, int64_t max,
                   int64_t *out, char *msg, size_t size)
{
	size_t i = opt_index(name);
	if (!r->val[i]) {
		*out = def;
		return 0;
	}
	return parse_int(r->who[i], r->val[i], min, max, out, msg, size);
}

static const char *get_str(const struct raw *r, const char *name)
{
	return r->val[opt_index(name)];
}

static const char *get_who(const struct raw *r, const char *name)
{
	return r->who[opt_index(name)];
}

static int parse_listen(config *cfg, const char *who, const char *s, char *msg, size_t size)
{
	const char *colon = strrchr(s, ':');
	char host[64];
	if (!colon || colon == s)
		return fail(msg, size, "%s: '%s' is not HOST:PORT", who, s);
	size_t hl = (size_t)(colon - s);
	if (s[0] == '[' && colon[-1] == ']') {
		s++;
		hl -= 2;
	}
	if (hl >= sizeof host)
		return fail(msg, size, "%s: host is too long", who);
	memcpy(host, s, hl);
	host[hl] = 0;
	unsigned char buf[16];
	if (inet_pton(AF_INET, host, buf) != 1 && inet_pton(AF_INET6, host, buf) != 1)
		return fail(msg, size, "%s: '%s' is not a numeric IPv4 or IPv6 address", who, host);
	int64_t port = 0;
	if (parse_int(who, colon + 1, 0, 65535, &port, msg, size))
		return -1;
	snprintf(cfg->listen_host, sizeof cfg->listen_host, "%s", host);
	cfg->listen_port = (int)port;
	return 0;
}

/* An API key that is empty, or starts or ends with a space, could never
 * be sent (HTTP drops the spaces around a header value): a key that locks
 * every client out, or one set by mistake (KEY= with nothing after it),
 * is refused at start-up. where adds to who in the message. */
static int key_bad(const char *who, const char *where, const char *key, char *msg, size_t size)
{
	size_t n = strlen(key);
	if (n == 0)
		return fail(msg, size, "%s%s: the API key is empty: give a key, or no api-key setting to "
		            "run without one", who, where);
	if (isspace((unsigned char)key[0]) || isspace((unsigned char)key[n - 1]))
		return fail(msg, size, "%s%s: the API key starts or ends with a space, which no client "
		            "can send", who, where);
	return 0;
}

static char *read_key_file(const char *who, const char *path, char *msg, size_t size)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	if (!f) {
		fail(msg, size, "%s: cannot open %s: %s", who, path, strerror(errno));
		return NULL;
	}
	char *ok = fgets(line, sizeof line, f);
	fclose(f);
	if (!ok) {
		fail(msg, size, "%s: %s is empty", who, path);
		return NULL;
	}
	line[strcspn(line, "\r\n")] = 0;
	char what[128];
	snprintf(what, sizeof what, " (the first line of %.80s)", path);
	if (key_bad(who, what, line, msg, size))
		return NULL;
	return strdup(line);
}

/* Appends the real path of dir to (*dirs)[*n] and, when given is not
 * NULL, dir as given made absolute to (*given)[*n]. */
static int add_dir(char ***dirs, char ***given, int *n, const char *who, const char *dir,
                   char *msg, size_t size)
{
	char cwd[4096];
	char *real = realpath(dir, NULL), *abs = NULL;
	if (!real)
		return fail(msg, size, "%s: %s: %s", who, dir, strerror(errno));
	if (given && (dir[0] == '/' ? !(abs = strdup(dir))
	                            : !getcwd(cwd, sizeof cwd) || asprintf(&abs, "%s/%s", cwd, dir) < 0)) {
		free(real);
		return fail(msg, size, "%s: %s: cannot make it absolute", who, dir);
	}
	char **p = realloc(*dirs, (size_t)(*n + 1) * sizeof *p);
	char **g = given ? realloc(*given, (size_t)(*n + 1) * sizeof *g) : NULL;
	if (p)
		*dirs = p;
	if (g)
		*given = g;
	if (!p || (given && !g)) {
		free(real);
		free(abs);
		return fail(msg, size, "out of memory");
	}
	if (given)
		(*given)[*n] = abs;
	(*dirs)[(*n)++] = real;
	return 0;
}

static void env_name(const char *opt, char *buf, size_t size)
{
	size_t o = (size_t)snprintf(buf, size, "CLIPD_");
	for (; *opt && o + 1 < size; opt++)
		buf[o++] = *opt == '-' ? '_' : (char)toupper((unsigned char)*opt);
	buf[o] = 0;
}

static int add_listed(struct raw *r, size_t opt, enum source src, const char *dir,
                      const char *who, char *msg, size_t size)
{
	struct dirlist *l = &r->lists[opts[opt].list - 1][src];
	if (l->n == MAX_LISTED)
		return fail(msg, size, "%s: more than %d directories", who, MAX_LISTED);
	l->dir[l->n] = dir;
	l->who[l->n++] = who;
	return 0;
}

/* Strips spaces at both ends in place; returns the new start. */
static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && isspace((unsigned char)s[n - 1]))
		s[--n] = 0;
	return s;
}

/* A config-file boolean as "1" or "0"; NULL when s is none. */
static const char *file_bool(const char *s)
{
	static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i]))
			return "1";
		if (!strcasecmp(s, no[i]))
			return "0";
	}
	return NULL;
}

/* A copy of value, joined to the folder of the config file when it is a
 * relative path. */
static const char *file_path(struct raw *r, const char *file, const char *value)
{
	const char *slash = strrchr(file, '/');
	if (value[0] == '/' || !slash)
		return keep(r, strdup(value));
	return keepf(r, "%.*s/%s", (int)(slash - file), file, value);
}

/* One line "key = value" of the config file; line is modified. */
static int file_line(struct raw *r, const char *file, int lineno, char *line, char *msg,
                     size_t size)
{
	char *s = trim(line);
	if (!*s || *s == '#')
		return 0;
	char *eq = strchr(s, '=');
	if (!eq)
		return fail(msg, size, "%s:%d: expected \"key = value\", got \"%.60s\"", file, lineno, s);
	*eq = 0;
	char *key = trim(s), *value = trim(eq + 1);
	size_t i;
	for (i = 0; i < NOPTS; i++)
		if (!strcmp(opts[i].name, key))
			break;
	if (i == NOPTS || !strcmp(key, "help"))
		return fail(msg, size,
		            "%s:%d: unknown key '%.60s' (keys are the option names of clipd --help, "
		            "without the dashes)", file, lineno, key);
	if (!strcmp(key, "config"))
		return fail(msg, size, "%s:%d: 'config' cannot be set in a config file", file, lineno);
	size_t vl = strlen(value);
	if (vl >= 2 && (value[0] == '"' || value[0] == '\'') && value[vl - 1] == value[0]) {
		value[vl - 1] = 0;
		value++;
	}
	if (!*value)
		return fail(msg, size, "%s:%d: %s has no value", file, lineno, key);
	const char *who = keepf(r, "%s:%d: %s", file, lineno, key);
	if (!who)
		return fail(msg, size, "out of memory");
	const char *v = value;
	if (opts[i].type == OPT_FLAG && !(v = file_bool(value)))
		return fail(msg, size, "%s: '%.60s' is not true or false", who, value);
	if (opts[i].type != OPT_FLAG && opts[i].path)
		v = file_path(r, file, value);
	else if (opts[i].type != OPT_FLAG)
		v = keep(r, strdup(value));
	if (!v)
		return fail(msg, size, "out of memory");
	if (opts[i].type == OPT_LIST)
		return add_listed(r, i, SRC_FILE, v, who, msg, size);
	if (r->file_line[i])
		return fail(msg, size, "%s: set twice (first on line %d)", who, r->file_line[i]);
	r->file_line[i] = lineno;
	if (r->src[i] < SRC_FILE) {
		r->val[i] = v;
		r->src[i] = SRC_FILE;
		r->who[i] = who;
	}
	return 0;
}

static int read_file(struct raw *r, const char *who, const char *file, char *msg, size_t size)
{
	FILE *f = fopen(file, "r");
	if (!f)
		return fail(msg, size, "%s: cannot open %s: %s", who, file, strerror(errno));
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0, rc = 0;
	errno = 0;
	while (getline(&line, &cap, f) >= 0) {
		if ((rc = file_line(r, file, ++lineno, line, msg, size)) != 0)
			break;
		errno = 0;
	}
	if (!rc && ferror(f))
		rc = fail(msg, size, "%s: cannot read %s: %s", who, file, strerror(errno));
	free(line);
	fclose(f);
	return rc;
}

/* Environment and command line into r. Returns 0, or -1 with msg. */
static int collect(struct raw *r, int argc, char **argv, char *msg, size_t size)
{
	char env[64];
	for (size_t i = 0; i < NOPTS; i++) {
		if (!strcmp(opts[i].name, "help"))
			continue;
		env_name(opts[i].name, env, sizeof env);
		const char *v = getenv(env);
		/* An empty variable is unset, but for the key: KEY= with nothing
		 * after it is a mistake that would run the daemon open. */
		if (!v || (!*v && strcmp(opts[i].name, "api-key") && strcmp(opts[i].name, "api-key-file")))
			continue;
		const char *who = keep(r, strdup(env));
		if (!who)
			return fail(msg, size, "out of memory");
		if (opts[i].type == OPT_LIST) {
			/* colon-separated: split a copy */
			char *copy = keep(r, strdup(v)), *save = NULL;
			if (!copy)
				return fail(msg, size, "out of memory");
			for (char *t = strtok_r(copy, ":", &save); t; t = strtok_r(NULL, ":", &save))
				if (add_listed(r, i, SRC_ENV, t, who, msg, size))
					return -1;
			continue;
		}
		r->val[i] = v;
		r->src[i] = SRC_ENV;
		r->who[i] = who;
	}
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
		const char *who = keepf(r, "--%s", opts[i].name);
		if (!who)
			return fail(msg, size, "out of memory");
		if (opts[i].type == OPT_FLAG) {
			if (!strcmp(opts[i].name, "help")) {
				r->help = 1;
				continue;
			}
			val = "1";
		} else if (arg[nl] == '=') {
			val = arg + nl + 1;
		} else if (a + 1 < argc) {
			val = argv[++a];
		} else {
			return fail(msg, size, "--%s needs a value", opts[i].name);
		}
		if (opts[i].type == OPT_LIST) {
			if (add_listed(r, i, SRC_CLI, val, who, msg, size))
				return -1;
			continue;
		}
		r->val[i] = val;
		r->src[i] = SRC_CLI;
		r->who[i] = who;
	}
	return 0;
}

static int resolve_list(const struct raw *r, const char *name, char ***dirs, char ***given, int *n,
                        char *msg, size_t size)
{
	const struct dirlist *lists = r->lists[opts[opt_index(name)].list - 1];
	for (int src = SRC_CLI; src > SRC_NONE; src--) {
		const struct dirlist *l = &lists[src];
		if (!l->n)
			continue;
		for (int i = 0; i < l->n; i++)
			if (add_dir(dirs, given, n, l->who[i], l->dir[i], msg, size))
				return -1;
		break;
	}
	return 0;
}

/* The settings in r into cfg. */
/* A comma-separated list of host names (origins: "scheme://host[:port]"),
 * lower-cased, into a new array. An empty entry is an error: "a,,b" is a
 * typo, not a wish to allow the empty name. */
static int split_names(struct raw *r, const char *name, int origins, char ***out, int *n,
                       char *msg, size_t size)
{
	const char *v = get_str(r, name);
	*out = NULL;
	*n = 0;
	if (!v)
		return 0;
	const char *who = get_who(r, name);
	for (const char *p = v;;) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		while (len && isspace((unsigned char)*p))
			p++, len--;
		while (len && isspace((unsigned char)p[len - 1]))
			len--;
		if (len == 0 || len > 253)
			return fail(msg, size, "%s: an empty or over-long name in '%s'", who, v);
		for (size_t i = 0; i < len; i++)
			if (!isalnum((unsigned char)p[i]) && !strchr(origins ? "-._:/[]" : "-._", p[i]))
				return fail(msg, size, "%s: '%.*s' is not %s", who, (int)len, p,
				            origins ? "an origin (scheme://host[:port])" : "a host name");
		if (origins && strncmp(p, "http://", 7) != 0 && strncmp(p, "https://", 8) != 0)
			return fail(msg, size, "%s: '%.*s' is not an origin (http://host[:port])", who,
			            (int)len, p);
		char **grown = realloc(*out, (size_t)(*n + 1) * sizeof *grown);
		if (!grown || !(grown[*n] = strndup(p, len))) {
			if (grown)
				*out = grown;
			return fail(msg, size, "out of memory");
		}
		*out = grown;
		for (char *c = grown[*n]; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		(*n)++;
		if (!e)
			break;
		p = e + 1;
	}
	return 0;
}

static int resolve(config *cfg, struct raw *r, char *msg, size_t size)
{
	const char *model = get_str(r, "model"), *data = get_str(r, "data");
	if (!model || !data)
		return fail(msg, size,
		            "--model DIR and --data DIR are required: on the command line, as "
		            "CLIPD_MODEL and CLIPD_DATA, or in a --config file (see --help)");
	cfg->model_dir = strdup(model);
	cfg->data_dir = strdup(data);
	const char *old_model = get_str(r, "old-model");
	if (old_model && !(cfg->old_model_dir = strdup(old_model)))
		return fail(msg, size, "out of memory");
	const char *listen = get_str(r, "listen");
	cfg->listen = strdup(listen ? listen : "127.0.0.1:8080");
	if (!cfg->model_dir || !cfg->data_dir || !cfg->listen)
		return fail(msg, size, "out of memory");
	if (parse_listen(cfg, listen ? get_who(r, "listen") : "--listen", cfg->listen, msg, size))
		return -1;

	/* The key and the key file are one setting: the stronger source wins. */
	size_t ik = opt_index("api-key"), ikf = opt_index("api-key-file");
	if (r->val[ik] && r->val[ikf]) {
		if (r->src[ik] == SRC_CLI && r->src[ikf] == SRC_CLI)
			return fail(msg, size, "give --api-key or --api-key-file, not both");
		if (r->src[ik] == r->src[ikf])
			return fail(msg, size, "give api-key or api-key-file, not both (%s; %s)",
			            r->who[ik], r->who[ikf]);
		if (r->src[ik] > r->src[ikf])
			r->val[ikf] = NULL;
		else
			r->val[ik] = NULL;
	}
	if (r->val[ik] && key_bad(r->who[ik], "", r->val[ik], msg, size))
		return -1;
	if (r->val[ik] && !(cfg->api_key = strdup(r->val[ik])))
		return fail(msg, size, "out of memory");
	if (r->val[ikf] && !*r->val[ikf])
		return fail(msg, size, "%s: no file named: give the file that holds the API key",
		            r->who[ikf]);
	if (r->val[ikf] && !(cfg->api_key = read_key_file(r->who[ikf], r->val[ikf], msg, size)))
		return -1;

	const char *reads = get_str(r, "api-key-reads");
	cfg->api_key_reads = reads && strcmp(reads, "0") != 0;
	const char *fast = get_str(r, "fast-decode");
	cfg->fast_decode = fast && strcmp(fast, "0") != 0;
	if (cfg->api_key_reads && !cfg->api_key)
		return fail(msg, size, "%s needs an API key (api-key or api-key-file)",
		            get_who(r, "api-key-reads"));

	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	if (cores < 1)
		cores = 1;
	int64_t v;
	if (get_int(r, "workers", cores / 2 > 0 ? cores / 2 : 1, 1, 256, &v, msg, size))
		return -1;
	cfg->workers = (int)v;
	if (get_int(r, "index-auto-threshold", 0, 0, INT64_MAX / 2, &v, msg, size))
		return -1;
	cfg->index_auto_at = v;
	if (get_int(r, "index-nprobe", 0, 0, 65536, &v, msg, size))
		return -1;
	cfg->index_nprobe = (int)v;
	if (get_int(r, "index-refine", -1, 0, 1000, &v, msg, size))
		return -1;
	cfg->index_refine = (int)v;
	if (get_int(r, "batch", 16, 1, 256, &v, msg, size))
		return -1;
	cfg->batch = (int)v;
	if (get_int(r, "encoders", 2, 1, 64, &v, msg, size))
		return -1;
	cfg->encoders = (int)v;
	if (get_int(r, "max-body-mb", 64, 1, 1 << 20, &v, msg, size))
		return -1;
	cfg->max_body = v << 20;
	if (get_int(r, "max-pixels", 100000000, 1, INT64_MAX / 2, &v, msg, size))
		return -1;
	cfg->max_pixels = v;
	if (get_int(r, "max-queue", 100000, 1, INT64_MAX / 2, &v, msg, size))
		return -1;
	cfg->max_queue = v;
	if (get_int(r, "timeout", 30, 1, 3600, &v, msg, size))
		return -1;
	cfg->timeout_s = (int)v;
	if (get_int(r, "header-timeout", 10, 1, 3600, &v, msg, size))
		return -1;
	cfg->header_timeout_s = (int)v;
	if (get_int(r, "max-connections", 1024, 1, 100000, &v, msg, size))
		return -1;
	cfg->max_conns = (int)v;
	if (get_int(r, "max-connections-per-ip", 64, 1, 100000, &v, msg, size))
		return -1;
	cfg->max_conns_per_ip = (int)v;
	if (split_names(r, "allow-host", 0, &cfg->allow_hosts, &cfg->n_allow_hosts, msg, size) ||
	    split_names(r, "allow-origin", 1, &cfg->allow_origins, &cfg->n_allow_origins, msg, size))
		return -1;
	if (get_int(r, "rescan-seconds", 300, 1, 86400, &v, msg, size))
		return -1;
	cfg->rescan_s = (int)v;
	cfg->wait_max_s = 60;
	if (get_int(r, "thumb-cache-mb", 512, 1, 1 << 24, &v, msg, size))
		return -1;
	cfg->thumb_cache_bytes = v << 20;
	if (get_int(r, "thumb-wait-ms", 10000, 0, 600000, &v, msg, size))
		return -1;
	cfg->thumb_wait_ms = (int)v;
	if (get_int(r, "max-decodes", cores > 2 ? cores : 2, 1, 1024, &v, msg, size))
		return -1;
	cfg->max_decodes = (int)v;
	if (get_int(r, "migration-pause-ms", 0, 0, 60000, &v, msg, size))
		return -1;
	cfg->migration_pause_ms = (int)v;
	if (get_int(r, "decode-wait-ms", 5000, 0, 600000, &v, msg, size))
		return -1;
	cfg->decode_wait_ms = (int)v;

	const char *factory = get_str(r, "index");
	if (!(cfg->index_factory = strdup(factory ? factory : "auto")))
		return fail(msg, size, "out of memory");
	const char *prec = get_str(r, "precision");
	if (prec && clip_precision_parse(prec, &cfg->precision) != 0)
		return fail(msg, size, "%s: '%s' is not auto, f32, bf16 or int8",
		            get_who(r, "precision"), prec);
	const char *lvl = get_str(r, "log-level");
	cfg->log_level = lvl ? log_level_parse(lvl) : LOG_LVL_INFO;
	if (cfg->log_level < 0)
		return fail(msg, size, "%s: '%s' is not error, warn, info or debug",
		            get_who(r, "log-level"), lvl);

	/* A list: the strongest source that names any directory wins whole. */
	if (resolve_list(r, "allow-root", &cfg->allow_roots, &cfg->allow_roots_given,
	                 &cfg->n_allow_roots, msg, size) ||
	    resolve_list(r, "watch", &cfg->watch_dirs, NULL, &cfg->n_watch_dirs, msg, size))
		return -1;
	return 0;
}

int config_parse(config *cfg, int argc, char **argv, FILE *out, char *msg, size_t size)
{
	struct raw r;
	int rc;
	memset(cfg, 0, sizeof *cfg);
	memset(&r, 0, sizeof r);

	if ((rc = collect(&r, argc, argv, msg, size)) != 0)
		goto out;
	if (r.help) {
		usage(out);
		rc = 1;
		goto out;
	}
	const char *file = get_str(&r, "config");
	if (file && (rc = read_file(&r, get_who(&r, "config"), file, msg, size)) != 0)
		goto out;
	rc = resolve(cfg, &r, msg, size);
out:
	raw_free(&r);
	return rc;
}

void config_free(config *cfg)
{
	free(cfg->model_dir);
	free(cfg->old_model_dir);
	free(cfg->data_dir);
	free(cfg->listen);
	free(cfg->api_key);
	free(cfg->index_factory);
	for (int i = 0; i < cfg->n_allow_roots; i++) {
		free(cfg->allow_roots[i]);
		free(cfg->allow_roots_given[i]);
	}
	free(cfg->allow_roots);
	free(cfg->allow_roots_given);
	for (int i = 0; i < cfg->n_watch_dirs; i++)
		free(cfg->watch_dirs[i]);
	free(cfg->watch_dirs);
	for (int i = 0; i < cfg->n_allow_hosts; i++)
		free(cfg->allow_hosts[i]);
	free(cfg->allow_hosts);
	for (int i = 0; i < cfg->n_allow_origins; i++)
		free(cfg->allow_origins[i]);
	free(cfg->allow_origins);
	memset(cfg, 0, sizeof *cfg);
}
