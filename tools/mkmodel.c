/*
 * clip-mkmodel: writes a CLIP or SigLIP checkpoint directory with random
 * weights in the Hugging Face layout (config.json, preprocessor_config.json,
 * model.safetensors, and for CLIP vocab.json and merges.txt), for tests of
 * shapes and dtypes the reference kits do not cover, and for benchmarks
 * (speed does not depend on the values).
 *
 *   clip-mkmodel --out DIR [--preset tiny|vit-b-32|vit-b-16|vit-l-14|cn-clip-b-16|cn-clip-l-14|siglip-tiny|
 *                siglip-b-16|siglip-b-16-256-multilingual|siglip2-b-16-256|siglip2-b-32-256]
 *                [--proj N] [--image-size N] [--vocab N]
 *                [--dtype f32|f16|bf16] [--round f32|f16|bf16]
 *                [--act quick_gelu|gelu] [--spm FILE] [--seed N]
 *
 * Presets have the real shapes: vit-b-32, vit-b-16, vit-l-14 those of
 * openai/clip-vit-{base-patch32,base-patch16,large-patch14}; siglip-b-16
 * google/siglip-base-patch16-224's (32,000 tokens); siglip-b-16-256-multilingual
 * google/siglip-base-patch16-256-multilingual's (a 250,000-piece vocabulary,
 * 256 pixels: transformers' convert_siglip_to_hf.py, "i18n" models, at
 * huggingface/transformers 283d692a); siglip2-b-16-256 and
 * siglip2-b-32-256 google/siglip2-base-patch{16,32}-256's (Gemma's 256,000
 * tokens). A SentencePiece model cannot be
 * made here: --spm FILE copies one in (as spiece.model, or tokenizer.model
 * for SigLIP2); its pieces must not outnumber the preset's vocabulary.
 * cn-clip-b-16 is OFA-Sys/chinese-clip-vit-base-patch16's shape (a BERT-base
 * text tower of 21,128 tokens), cn-clip-l-14 -large-patch14's (ViT-L/14 with
 * the same text tower, a 768-wide projection: 406 M parameters, the
 * Chinese-CLIP README's model card); its vocab.txt comes in with --spm FILE too.
 * --proj N changes a CLIP preset's projection (embedding) size; --vocab N
 * a preset's vocabulary (the token table's rows);
 * --image-size N the input side (for SigLIP also one the patch size does
 * not divide, as google/siglip-so400m-patch14-384's 384 and 14 are).
 *
 * --round rounds every value to that precision before storing it in
 * --dtype (default: the storage dtype), so an f32 checkpoint written with
 * --round bf16 holds exactly the weights of its bf16 twin.
 *
 * The tokenizer files are a valid byte-level BPE vocabulary of the real
 * size (49408): the 512 byte symbols, synthetic merges of letters and
 * digits, and the two special tokens. Real text tokenizes with them; the
 * ids differ from the real CLIP vocabulary.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum dtype { DT_F32, DT_F16, DT_BF16 };

struct shape {
	int vh, vi, vheads, vlayers, image, patch;
	int th, ti, theads, tlayers, ctx, vocab;
	int proj;
	int siglip;   /* 0 CLIP, 1 SigLIP, 2 SigLIP2 (a Gemma tokenizer, bilinear),
	               * 3 Chinese-CLIP (a BERT text tower) */
};

static const struct {
	const char *name;
	struct shape s;
} presets[] = {
	{"tiny", {64, 256, 2, 2, 224, 32, 64, 256, 2, 2, 77, 49408, 32, 0}},
	{"vit-b-32", {768, 3072, 12, 12, 224, 32, 512, 2048, 8, 12, 77, 49408, 512, 0}},
	{"vit-b-16", {768, 3072, 12, 12, 224, 16, 512, 2048, 8, 12, 77, 49408, 512, 0}},
	{"vit-l-14", {1024, 4096, 16, 24, 224, 14, 768, 3072, 12, 12, 77, 49408, 768, 0}},
	{"siglip-tiny", {64, 256, 2, 2, 96, 16, 64, 256, 2, 2, 64, 2000, 64, 1}},
	{"cn-clip-b-16", {768, 3072, 12, 12, 224, 16, 768, 3072, 12, 12, 512, 21128, 512, 3}},
	{"cn-clip-l-14", {1024, 4096, 16, 24, 224, 14, 768, 3072, 12, 12, 512, 21128, 768, 3}},
	{"siglip-b-16", {768, 3072, 12, 12, 224, 16, 768, 3072, 12, 12, 64, 32000, 768, 1}},
	{"siglip-b-16-256-multilingual", {768, 3072, 12, 12, 256, 16, 768, 3072, 12, 12, 64, 250000, 768, 1}},
	{"siglip2-b-16-256", {768, 3072, 12, 12, 256, 16, 768, 3072, 12, 12, 64, 256000, 768, 2}},
	{"siglip2-b-32-256", {768, 3072, 12, 12, 256, 32, 768, 3072, 12, 12, 64, 256000, 768, 2}},
};

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next_u64(void)
{
	/* splitmix64 */
	uint64_t z = (rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float uniform(void)
{
	return (float)((double)(next_u64() >> 11) / (double)(1ULL << 53) * 2.0 - 1.0);
}

static uint16_t f32_to_bf16(float f)
{
	uint32_t b;
	memcpy(&b, &f, 4);
	if ((b & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((b >> 16) | 0x40);
	b += 0x7fff + ((b >> 16) & 1); /* round to nearest even */
	return (uint16_t)(b >> 16);
}

static float bf16_to_f32(uint16_t h)
{
	uint32_t b = (uint32_t)h << 16;
	float f;
	memcpy(&f, &b, 4);
	return f;
}

static uint16_t f32_to_f16(float f)
{
	uint32_t b;
	memcpy(&b, &f, 4);
	uint32_t sign = (b >> 16) & 0x8000;
	int32_t exp = (int32_t)((b >> 23) & 0xff) - 127 + 15;
	uint32_t man = b & 0x7fffff;
	if (((b >> 23) & 0xff) == 0xff)
		return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
	if (exp >= 31)
		return (uint16_t)(sign | 0x7c00);
	if (exp <= 0) {
		if (exp < -10)
			return (uint16_t)sign;
		man |= 0x800000;
		int shift = 14 - exp;
		uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (h & 1)))
			h++;
		return (uint16_t)(sign | h);
	}
	uint32_t h = sign | (uint32_t)exp << 10 | man >> 13, rem = man & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
		h++; /* may carry into the exponent, which is right */
	return (uint16_t)h;
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	float f;
	if (exp == 0) {
		f = ldexpf((float)man, -24);
		return sign ? -f : f;
	}
	uint32_t b = exp == 0x1f ? sign | 0x7f800000 | man << 13 : sign | (exp + 112) << 23 | man << 13;
	memcpy(&f, &b, 4);
	return f;
}

struct tensor {
	char name[160];
	int ndim;
	int64_t shape[4];
	int i64;          /* position_ids buffer */
	int kind;         /* 0 weight, 1 bias, 2 layernorm weight, 3 embedding,
	                   * 4 position_ids, 5 logit_scale, 6 logit_bias */
};

static struct tensor *tensors;
static size_t ntensors, captensors;

static void add(int kind, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));

#include <stdarg.h>
static void add(int kind, int ndim, int64_t a, int64_t b, int64_t c, int64_t d, const char *fmt, ...)
{
	if (ntensors == captensors) {
		captensors = captensors ? 2 * captensors : 256;
		tensors = realloc(tensors, captensors * sizeof *tensors);
		if (!tensors) {
			fprintf(stderr, "clip-mkmodel: out of memory\n");
			exit(1);
		}
	}
	struct tensor *t = &tensors[ntensors++];
	memset(t, 0, sizeof *t);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(t->name, sizeof t->name, fmt, ap);
	va_end(ap);
	t->ndim = ndim;
	int64_t s[4] = {a, b, c, d};
	memcpy(t->shape, s, sizeof s);
	t->kind = kind;
	t->i64 = kind == 4;
}

static void add_tower(const char *pre, int d, int inter, int layers)
{
	for (int l = 0; l < layers; l++) {
		const char *p = "encoder.layers";
		static const char *lin[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
		for (int j = 0; j < 4; j++) {
			add(0, 2, d, d, 0, 0, "%s.%s.%d.self_attn.%s.weight", pre, p, l, lin[j]);
			add(1, 1, d, 0, 0, 0, "%s.%s.%d.self_attn.%s.bias", pre, p, l, lin[j]);
		}
		add(2, 1, d, 0, 0, 0, "%s.%s.%d.layer_norm1.weight", pre, p, l);
		add(1, 1, d, 0, 0, 0, "%s.%s.%d.layer_norm1.bias", pre, p, l);
		add(2, 1, d, 0, 0, 0, "%s.%s.%d.layer_norm2.weight", pre, p, l);
		add(1, 1, d, 0, 0, 0, "%s.%s.%d.layer_norm2.bias", pre, p, l);
		add(0, 2, inter, d, 0, 0, "%s.%s.%d.mlp.fc1.weight", pre, p, l);
		add(1, 1, inter, 0, 0, 0, "%s.%s.%d.mlp.fc1.bias", pre, p, l);
		add(0, 2, d, inter, 0, 0, "%s.%s.%d.mlp.fc2.weight", pre, p, l);
		add(1, 1, d, 0, 0, 0, "%s.%s.%d.mlp.fc2.bias", pre, p, l);
	}
}

static int64_t numel(const struct tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

static int write_json(const char *dir, const char *name, json_t *j)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int rc = json_dump_file(j, path, JSON_INDENT(2));
	json_decref(j);
	if (rc != 0)
		fprintf(stderr, "clip-mkmodel: cannot write %s\n", path);
	return rc;
}

/* GPT-2's byte-to-unicode table: printable bytes stand for themselves, the
 * others for code points from 256 up. Writes the UTF-8 of byte b's symbol. */
static void byte_symbol(int b, char out[4])
{
	int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
	int cp = b;
	if (!printable) {
		int n = 0;
		for (int x = 0; x < b; x++)
			if (!((x >= '!' && x <= '~') || (x >= 0xa1 && x <= 0xac) || (x >= 0xae && x <= 0xff)))
				n++;
		cp = 256 + n;
	}
	if (cp < 0x80) {
		out[0] = (char)cp;
		out[1] = 0;
	} else {
		out[0] = (char)(0xc0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3f));
		out[2] = 0;
	}
}

static int write_tokenizer(const char *dir, int vocab_size)
{
	char path[4096];
	json_t *vocab = json_object();
	int id = 0;
	/* Byte symbols in the order the real vocabulary uses: printable
	 * bytes first, then the rest. */
	int order[256], k = 0;
	for (int b = 0; b < 256; b++)
		if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff))
			order[k++] = b;
	for (int b = 0; b < 256; b++)
		if (!((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)))
			order[k++] = b;
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < 256; i++) {
			char s[16];
			byte_symbol(order[i], s);
			if (pass)
				strcat(s, "</w>");
			json_object_set_new(vocab, s, json_integer(id++));
		}
	snprintf(path, sizeof path, "%s/merges.txt", dir);
	FILE *m = fopen(path, "w");
	if (!m) {
		fprintf(stderr, "clip-mkmodel: %s: %s\n", path, strerror(errno));
		json_decref(vocab);
		return -1;
	}
	fputs("#version: 0.2\n", m);
	const char *chars = "abcdefghijklmnopqrstuvwxyz0123456789";
	int nc = (int)strlen(chars), want = vocab_size - 512 - 2;
	/* Pairs first, then a pair and one more character. */
	for (int lvl = 0; lvl < 2 && id < 512 + want; lvl++)
		for (int a = 0; a < (lvl ? nc * nc : nc) && id < 512 + want; a++)
			for (int b = 0; b < nc && id < 512 + want; b++)
				for (int end = 0; end < 2 && id < 512 + want; end++) {
					char left[8], tok[16];
					if (lvl == 0)
						snprintf(left, sizeof left, "%c", chars[a]);
					else
						snprintf(left, sizeof left, "%c%c", chars[a / nc], chars[a % nc]);
					fprintf(m, "%s %c%s\n", left, chars[b], end ? "</w>" : "");
					snprintf(tok, sizeof tok, "%s%c%s", left, chars[b], end ? "</w>" : "");
					json_object_set_new(vocab, tok, json_integer(id++));
				}
	if (fclose(m) != 0) {
		json_decref(vocab);
		return -1;
	}
	json_object_set_new(vocab, "<|startoftext|>", json_integer(id++));
	json_object_set_new(vocab, "<|endoftext|>", json_integer(id++));
	if (id != vocab_size) {
		fprintf(stderr, "clip-mkmodel: vocabulary came out at %d, not %d\n", id, vocab_size);
		json_decref(vocab);
		return -1;
	}
	return write_json(dir, "vocab.json", vocab);
}

static json_t *tower_json(int d, int inter, int heads, int layers, const char *act)
{
	json_t *o = json_object();
	json_object_set_new(o, "hidden_size", json_integer(d));
	json_object_set_new(o, "intermediate_size", json_integer(inter));
	json_object_set_new(o, "num_attention_heads", json_integer(heads));
	json_object_set_new(o, "num_hidden_layers", json_integer(layers));
	json_object_set_new(o, "hidden_act", json_string(act));
	json_object_set_new(o, "layer_norm_eps", json_real(1e-5));
	return o;
}

/* model.safetensors: the tensors added so far, random values of the
 * scales that keep activations of order 1 through the layers. */
static int write_tensors(const char *out, enum dtype dt, int round)
{
	size_t esize = dt == DT_F32 ? 4 : 2;
	json_t *hdr = json_object();
	uint64_t off = 0;
	for (size_t i = 0; i < ntensors; i++) {
		struct tensor *t = &tensors[i];
		uint64_t n = (uint64_t)numel(t) * (t->i64 ? 8 : esize);
		json_t *shape = json_array();
		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(t->shape[d]));
		json_object_set_new(hdr, t->name,
		                    json_pack("{s:s,s:o,s:[I,I]}", "dtype",
		                              t->i64 ? "I64" : dt == DT_F32 ? "F32" : dt == DT_F16 ? "F16" : "BF16",
		                              "shape", shape, "data_offsets", (json_int_t)off, (json_int_t)(off + n)));
		off += n;
	}
	json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
	char *h = json_dumps(hdr, JSON_COMPACT);
	json_decref(hdr);
	size_t hl = strlen(h), padded = (hl + 7) / 8 * 8;

	char path[4096];
	snprintf(path, sizeof path, "%s/model.safetensors", out);
	FILE *f = fopen(path, "wb");
	if (!f) {
		fprintf(stderr, "clip-mkmodel: %s: %s\n", path, strerror(errno));
		return -1;
	}
	unsigned char len8[8];
	for (int i = 0; i < 8; i++)
		len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
	fwrite(len8, 1, 8, f);
	fwrite(h, 1, hl, f);
	for (size_t i = hl; i < padded; i++)
		fputc(' ', f);
	free(h);

	for (size_t i = 0; i < ntensors; i++) {
		struct tensor *t = &tensors[i];
		int64_t n = numel(t);
		if (t->i64) {
			for (int64_t j = 0; j < n; j++) {
				int64_t v = j;
				fwrite(&v, 8, 1, f);
			}
			continue;
		}
		/* Scales that keep activations of order 1 through the layers. */
		int64_t fan_in = t->ndim >= 2 ? n / t->shape[0] : 1;
		for (int64_t j = 0; j < n; j++) {
			float v;
			switch (t->kind) {
			case 0: v = uniform() * sqrtf(3.0f / (float)fan_in); break;
			case 1: v = 0.02f * uniform(); break;
			case 2: v = 1.0f + 0.1f * uniform(); break;
			case 3: v = 0.5f * uniform(); break;
			case 6: v = -10.0f; break; /* logit_bias, of the order SigLIP learns */
			default: v = logf(100.0f); break; /* logit_scale */
			}
			if (round == DT_BF16)
				v = bf16_to_f32(f32_to_bf16(v));
			else if (round == DT_F16)
				v = f16_to_f32(f32_to_f16(v));
			if (dt == DT_F32) {
				fwrite(&v, 4, 1, f);
			} else {
				uint16_t b = dt == DT_BF16 ? f32_to_bf16(v) : f32_to_f16(v);
				fwrite(&b, 2, 1, f);
			}
		}
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "clip-mkmodel: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int copy_file(const char *from, const char *to)
{
	FILE *a = fopen(from, "rb"), *b = a ? fopen(to, "wb") : NULL;
	char buf[65536];
	size_t n;
	int rc = a && b ? 0 : -1;
	while (rc == 0 && (n = fread(buf, 1, sizeof buf, a)) > 0)
		if (fwrite(buf, 1, n, b) != n)
			rc = -1;
	if (a && ferror(a))
		rc = -1;
	if (a)
		fclose(a);
	if (b && fclose(b) != 0)
		rc = -1;
	if (rc)
		fprintf(stderr, "clip-mkmodel: cannot copy %s to %s\n", from, to);
	return rc;
}

/* A SiglipModel checkpoint (transformers' names; see model/load_hf.c). */
static int write_siglip(const char *out, const struct shape *s, const char *act, enum dtype dt,
                        int round, const char *spm)
{
	json_t *cfg = json_object(), *tc = tower_json(s->th, s->ti, s->theads, s->tlayers, act);
	json_t *vc = tower_json(s->vh, s->vi, s->vheads, s->vlayers, act);
	json_object_set_new(tc, "layer_norm_eps", json_real(1e-6));
	json_object_set_new(vc, "layer_norm_eps", json_real(1e-6));
	json_object_set_new(cfg, "architectures", json_pack("[s]", "SiglipModel"));
	json_object_set_new(cfg, "model_type", json_string("siglip"));
	json_object_set_new(tc, "max_position_embeddings", json_integer(s->ctx));
	json_object_set_new(tc, "vocab_size", json_integer(s->vocab));
	json_object_set_new(vc, "image_size", json_integer(s->image));
	json_object_set_new(vc, "patch_size", json_integer(s->patch));
	json_object_set_new(vc, "num_channels", json_integer(3));
	json_object_set_new(cfg, "text_config", tc);
	json_object_set_new(cfg, "vision_config", vc);
	if (write_json(out, "config.json", cfg) != 0)
		return 1;
	/* SigLIP's processors resize bicubic, SigLIP2's bilinear. */
	json_t *pp = json_pack("{s:{s:i,s:i},s:b,s:b,s:b,s:[f,f,f],s:[f,f,f],s:i,s:f,s:s}", "size",
	                       "height", s->image, "width", s->image, "do_normalize", 1, "do_resize", 1,
	                       "do_rescale", 1, "image_mean", 0.5, 0.5, 0.5, "image_std", 0.5, 0.5, 0.5,
	                       "resample", s->siglip == 2 ? 2 : 3, "rescale_factor", 1.0 / 255.0,
	                       "image_processor_type", "SiglipImageProcessor");
	if (write_json(out, "preprocessor_config.json", pp) != 0)
		return 1;
	if (spm) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", out, s->siglip == 2 ? "tokenizer.model" : "spiece.model");
		if (copy_file(spm, path) != 0)
			return 1;
	}
	int g = s->image / s->patch, d = s->vh;
	add(6, 1, 1, 0, 0, 0, "logit_bias");
	add(5, 1, 1, 0, 0, 0, "logit_scale");
	add(3, 2, s->ctx, s->th, 0, 0, "text_model.embeddings.position_embedding.weight");
	add(3, 2, s->vocab, s->th, 0, 0, "text_model.embeddings.token_embedding.weight");
	add_tower("text_model", s->th, s->ti, s->tlayers);
	add(1, 1, s->th, 0, 0, 0, "text_model.final_layer_norm.bias");
	add(2, 1, s->th, 0, 0, 0, "text_model.final_layer_norm.weight");
	add(1, 1, s->proj, 0, 0, 0, "text_model.head.bias");
	add(0, 2, s->proj, s->th, 0, 0, "text_model.head.weight");
	add(1, 1, d, 0, 0, 0, "vision_model.embeddings.patch_embedding.bias");
	add(0, 4, d, 3, s->patch, s->patch, "vision_model.embeddings.patch_embedding.weight");
	add(3, 2, g * g, d, 0, 0, "vision_model.embeddings.position_embedding.weight");
	add_tower("vision_model", d, s->vi, s->vlayers);
	add(1, 1, 3 * d, 0, 0, 0, "vision_model.head.attention.in_proj_bias");
	add(0, 2, 3 * d, d, 0, 0, "vision_model.head.attention.in_proj_weight");
	add(1, 1, d, 0, 0, 0, "vision_model.head.attention.out_proj.bias");
	add(0, 2, d, d, 0, 0, "vision_model.head.attention.out_proj.weight");
	add(1, 1, d, 0, 0, 0, "vision_model.head.layernorm.bias");
	add(2, 1, d, 0, 0, 0, "vision_model.head.layernorm.weight");
	add(1, 1, s->vi, 0, 0, 0, "vision_model.head.mlp.fc1.bias");
	add(0, 2, s->vi, d, 0, 0, "vision_model.head.mlp.fc1.weight");
	add(1, 1, d, 0, 0, 0, "vision_model.head.mlp.fc2.bias");
	add(0, 2, d, s->vi, 0, 0, "vision_model.head.mlp.fc2.weight");
	add(3, 3, 1, 1, d, 0, "vision_model.head.probe");
	add(1, 1, d, 0, 0, 0, "vision_model.post_layernorm.bias");
	add(2, 1, d, 0, 0, 0, "vision_model.post_layernorm.weight");
	if (write_tensors(out, dt, round) != 0)
		return 1;
	free(tensors);
	return 0;
}

/* A ChineseCLIPModel checkpoint: CLIP's vision tower, BERT's text tower
 * (transformers' names; see model/load_hf.c). vocab (--spm) is a vocab.txt
 * to copy in, e.g. the Chinese-CLIP kit's. */
static int write_cnclip(const char *out, const struct shape *s, enum dtype dt, int round,
                        const char *vocab)
{
	json_t *cfg = json_object(), *tc = tower_json(s->th, s->ti, s->theads, s->tlayers, "gelu");
	json_t *vc = tower_json(s->vh, s->vi, s->vheads, s->vlayers, "quick_gelu");
	json_object_set_new(tc, "layer_norm_eps", json_real(1e-12));
	json_object_set_new(tc, "model_type", json_string("chinese_clip_text_model"));
	json_object_set_new(tc, "max_position_embeddings", json_integer(s->ctx));
	json_object_set_new(tc, "vocab_size", json_integer(s->vocab));
	json_object_set_new(tc, "type_vocab_size", json_integer(2));
	json_object_set_new(tc, "position_embedding_type", json_string("absolute"));
	json_object_set_new(vc, "model_type", json_string("chinese_clip_vision_model"));
	json_object_set_new(vc, "image_size", json_integer(s->image));
	json_object_set_new(vc, "patch_size", json_integer(s->patch));
	json_object_set_new(cfg, "architectures", json_pack("[s]", "ChineseCLIPModel"));
	json_object_set_new(cfg, "model_type", json_string("chinese_clip"));
	json_object_set_new(cfg, "projection_dim", json_integer(s->proj));
	json_object_set_new(cfg, "text_config", tc);
	json_object_set_new(cfg, "vision_config", vc);
	if (write_json(out, "config.json", cfg) != 0)
		return 1;
	json_t *pp = json_pack("{s:b,s:b,s:b,s:[f,f,f],s:[f,f,f],s:i,s:{s:i,s:i},s:s}",
	                       "do_center_crop", 0, "do_normalize", 1, "do_resize", 1, "image_mean",
	                       0.48145466, 0.4578275, 0.40821073, "image_std", 0.26862954, 0.26130258,
	                       0.27577711, "resample", 3, "size", "height", s->image, "width", s->image,
	                       "feature_extractor_type", "ChineseCLIPFeatureExtractor");
	if (write_json(out, "preprocessor_config.json", pp) != 0)
		return 1;
	if (vocab) {
		char path[4096];
		snprintf(path, sizeof path, "%s/vocab.txt", out);
		if (copy_file(vocab, path) != 0)
			return 1;
	}
	int g = s->image / s->patch, d = s->th;
	add(5, 0, 0, 0, 0, 0, "logit_scale");
	const char *e = "text_model.embeddings";
	add(2, 1, d, 0, 0, 0, "%s.LayerNorm.weight", e);
	add(1, 1, d, 0, 0, 0, "%s.LayerNorm.bias", e);
	add(3, 2, s->ctx, d, 0, 0, "%s.position_embeddings.weight", e);
	add(3, 2, 2, d, 0, 0, "%s.token_type_embeddings.weight", e);
	add(3, 2, s->vocab, d, 0, 0, "%s.word_embeddings.weight", e);
	for (int l = 0; l < s->tlayers; l++) {
		const char *p = "text_model.encoder.layer";
		static const char *qkv[] = {"query", "key", "value"};
		for (int j = 0; j < 3; j++) {
			add(0, 2, d, d, 0, 0, "%s.%d.attention.self.%s.weight", p, l, qkv[j]);
			add(1, 1, d, 0, 0, 0, "%s.%d.attention.self.%s.bias", p, l, qkv[j]);
		}
		add(0, 2, d, d, 0, 0, "%s.%d.attention.output.dense.weight", p, l);
		add(1, 1, d, 0, 0, 0, "%s.%d.attention.output.dense.bias", p, l);
		add(2, 1, d, 0, 0, 0, "%s.%d.attention.output.LayerNorm.weight", p, l);
		add(1, 1, d, 0, 0, 0, "%s.%d.attention.output.LayerNorm.bias", p, l);
		add(0, 2, s->ti, d, 0, 0, "%s.%d.intermediate.dense.weight", p, l);
		add(1, 1, s->ti, 0, 0, 0, "%s.%d.intermediate.dense.bias", p, l);
		add(0, 2, d, s->ti, 0, 0, "%s.%d.output.dense.weight", p, l);
		add(1, 1, d, 0, 0, 0, "%s.%d.output.dense.bias", p, l);
		add(2, 1, d, 0, 0, 0, "%s.%d.output.LayerNorm.weight", p, l);
		add(1, 1, d, 0, 0, 0, "%s.%d.output.LayerNorm.bias", p, l);
	}
	add(0, 2, s->proj, d, 0, 0, "text_projection.weight");
	add(3, 1, s->vh, 0, 0, 0, "vision_model.embeddings.class_embedding");
	add(0, 4, s->vh, 3, s->patch, s->patch, "vision_model.embeddings.patch_embedding.weight");
	add(3, 2, g * g + 1, s->vh, 0, 0, "vision_model.embeddings.position_embedding.weight");
	add_tower("vision_model", s->vh, s->vi, s->vlayers);
	add(1, 1, s->vh, 0, 0, 0, "vision_model.post_layernorm.bias");
	add(2, 1, s->vh, 0, 0, 0, "vision_model.post_layernorm.weight");
	add(1, 1, s->vh, 0, 0, 0, "vision_model.pre_layrnorm.bias");
	add(2, 1, s->vh, 0, 0, 0, "vision_model.pre_layrnorm.weight");
	add(0, 2, s->proj, s->vh, 0, 0, "visual_projection.weight");
	if (write_tensors(out, dt, round) != 0)
		return 1;
	free(tensors);
	return 0;
}

int main(int argc, char **argv)
{
	const char *out = NULL, *preset = "tiny", *act = NULL, *spm = NULL;
	int proj = 0, image = 0, vocab = 0;
	enum dtype dt = DT_F32;
	int round = -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help")) {
			puts("usage: clip-mkmodel --out DIR [--preset tiny|vit-b-32|vit-b-16|vit-l-14|cn-clip-b-16|cn-clip-l-14|siglip-tiny|"
			     "siglip-b-16|siglip-b-16-256-multilingual|siglip2-b-16-256|siglip2-b-32-256] [--proj N] "
			     "[--image-size N] [--vocab N] [--dtype f32|f16|bf16] "
			     "[--round f32|f16|bf16] [--act quick_gelu|gelu] [--spm FILE] [--seed N]");
			return 0;
		}
		if (!v) {
			fprintf(stderr, "clip-mkmodel: %s needs a value\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--out")) {
			out = v;
		} else if (!strcmp(a, "--preset")) {
			preset = v;
		} else if (!strcmp(a, "--act")) {
			if (strcmp(v, "quick_gelu") && strcmp(v, "gelu") && strcmp(v, "gelu_pytorch_tanh")) {
				fprintf(stderr, "clip-mkmodel: --act is quick_gelu, gelu or gelu_pytorch_tanh\n");
				return 2;
			}
			act = v;
		} else if (!strcmp(a, "--spm")) {
			spm = v;
		} else if (!strcmp(a, "--image-size")) {
			image = atoi(v);
			if (image < 1 || image > 4096) {
				fprintf(stderr, "clip-mkmodel: --image-size is 1..4096\n");
				return 2;
			}
		} else if (!strcmp(a, "--vocab")) {
			vocab = atoi(v);
			if (vocab < 600 || vocab > 1000000) {
				fprintf(stderr, "clip-mkmodel: --vocab is 600..1000000\n");
				return 2;
			}
		} else if (!strcmp(a, "--proj")) {
			proj = atoi(v);
			if (proj < 1 || proj > 65536) {
				fprintf(stderr, "clip-mkmodel: --proj is 1..65536\n");
				return 2;
			}
		} else if (!strcmp(a, "--seed")) {
			rng = strtoull(v, NULL, 10) * 0x9e3779b97f4a7c15ULL + 1;
		} else if (!strcmp(a, "--dtype") || !strcmp(a, "--round")) {
			int d = !strcmp(v, "f32") ? DT_F32 : !strcmp(v, "f16") ? DT_F16 : !strcmp(v, "bf16") ? DT_BF16 : -1;
			if (d < 0) {
				fprintf(stderr, "clip-mkmodel: %s is f32, f16 or bf16\n", a);
				return 2;
			}
			if (!strcmp(a, "--dtype"))
				dt = (enum dtype)d;
			else
				round = d;
		} else {
			fprintf(stderr, "clip-mkmodel: unknown option %s\n", a);
			return 2;
		}
	}
	if (round < 0)
		round = (int)dt;
	struct shape sh;
	const struct shape *s = NULL;
	for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
		if (!strcmp(presets[i].name, preset))
			s = &presets[i].s;
	if (!out || !s) {
		fprintf(stderr, "clip-mkmodel: --out DIR is required; --preset is tiny, vit-b-32, "
		        "vit-b-16, vit-l-14, cn-clip-b-16, cn-clip-l-14, siglip-tiny, siglip-b-16, "
		        "siglip-b-16-256-multilingual, siglip2-b-16-256 or siglip2-b-32-256\n");
		return 2;
	}
	if (proj && s->siglip) {
		fprintf(stderr, "clip-mkmodel: --proj is for CLIP presets (SigLIP's embedding is the "
		        "vision width)\n");
		return 2;
	}
	sh = *s;
	if (proj)
		sh.proj = proj;
	if (vocab) {
		if (!sh.siglip) {
			fprintf(stderr, "clip-mkmodel: --vocab is for SigLIP and Chinese-CLIP presets (CLIP's "
			        "BPE files are written for 49,408 tokens)\n");
			return 2;
		}
		sh.vocab = vocab;
	}
	if (image) {
		if (!sh.siglip && image % sh.patch) {
			fprintf(stderr, "clip-mkmodel: a CLIP image size must be a multiple of the patch "
			        "size %d\n", sh.patch);
			return 2;
		}
		if (image < sh.patch) {
			fprintf(stderr, "clip-mkmodel: --image-size is below the patch size %d\n", sh.patch);
			return 2;
		}
		sh.image = image;
	}
	s = &sh;
	if (!act)
		act = s->siglip == 1 || s->siglip == 2 ? "gelu_pytorch_tanh" : "quick_gelu";
	if (mkdir(out, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "clip-mkmodel: %s: %s\n", out, strerror(errno));
		return 1;
	}
	if (s->siglip == 3)
		return write_cnclip(out, s, dt, round, spm);
	if (s->siglip)
		return write_siglip(out, s, act, dt, round, spm);

	/* config.json, as transformers writes it for CLIPModel. */
	json_t *cfg = json_object(), *tc = tower_json(s->th, s->ti, s->theads, s->tlayers, act);
	json_t *vc = tower_json(s->vh, s->vi, s->vheads, s->vlayers, act);
	json_object_set_new(cfg, "architectures", json_pack("[s]", "CLIPModel"));
	json_object_set_new(cfg, "model_type", json_string("clip"));
	json_object_set_new(cfg, "projection_dim", json_integer(s->proj));
	json_object_set_new(cfg, "logit_scale_init_value", json_real(2.6592));
	json_object_set_new(cfg, "torch_dtype", json_string(dt == DT_F32 ? "float32" : dt == DT_F16 ? "float16" : "bfloat16"));
	json_object_set_new(tc, "max_position_embeddings", json_integer(s->ctx));
	json_object_set_new(tc, "vocab_size", json_integer(s->vocab));
	json_object_set_new(tc, "bos_token_id", json_integer(0));
	json_object_set_new(tc, "eos_token_id", json_integer(2));
	json_object_set_new(tc, "pad_token_id", json_integer(1));
	json_object_set_new(vc, "image_size", json_integer(s->image));
	json_object_set_new(vc, "patch_size", json_integer(s->patch));
	json_object_set_new(vc, "num_channels", json_integer(3));
	json_object_set_new(cfg, "text_config", tc);
	json_object_set_new(cfg, "vision_config", vc);
	if (write_json(out, "config.json", cfg) != 0)
		return 1;
	json_t *pp = json_pack("{s:{s:i,s:i},s:b,s:b,s:b,s:b,s:[f,f,f],s:[f,f,f],s:i,s:f,s:{s:i},s:s}",
	                       "crop_size", "height", s->image, "width", s->image, "do_center_crop", 1,
	                       "do_normalize", 1, "do_resize", 1, "do_convert_rgb", 1, "image_mean",
	                       0.48145466, 0.4578275, 0.40821073, "image_std", 0.26862954, 0.26130258,
	                       0.27577711, "resample", 3, "rescale_factor", 1.0 / 255.0, "size",
	                       "shortest_edge", s->image, "image_processor_type", "CLIPImageProcessor");
	if (write_json(out, "preprocessor_config.json", pp) != 0)
		return 1;
	if (write_tokenizer(out, s->vocab) != 0)
		return 1;

	/* Tensors, in the order of the reference checkpoints. */
	int g = s->image / s->patch;
	add(5, 0, 0, 0, 0, 0, "logit_scale");
	add(3, 2, s->ctx, s->th, 0, 0, "text_model.embeddings.position_embedding.weight");
	add(4, 2, 1, s->ctx, 0, 0, "text_model.embeddings.position_ids");
	add(3, 2, s->vocab, s->th, 0, 0, "text_model.embeddings.token_embedding.weight");
	add_tower("text_model", s->th, s->ti, s->tlayers);
	add(1, 1, s->th, 0, 0, 0, "text_model.final_layer_norm.bias");
	add(2, 1, s->th, 0, 0, 0, "text_model.final_layer_norm.weight");
	add(0, 2, s->proj, s->th, 0, 0, "text_projection.weight");
	add(3, 1, s->vh, 0, 0, 0, "vision_model.embeddings.class_embedding");
	add(0, 4, s->vh, 3, s->patch, s->patch, "vision_model.embeddings.patch_embedding.weight");
	add(3, 2, g * g + 1, s->vh, 0, 0, "vision_model.embeddings.position_embedding.weight");
	add(4, 2, 1, g * g + 1, 0, 0, "vision_model.embeddings.position_ids");
	add_tower("vision_model", s->vh, s->vi, s->vlayers);
	add(1, 1, s->vh, 0, 0, 0, "vision_model.post_layernorm.bias");
	add(2, 1, s->vh, 0, 0, 0, "vision_model.post_layernorm.weight");
	add(1, 1, s->vh, 0, 0, 0, "vision_model.pre_layrnorm.bias");
	add(2, 1, s->vh, 0, 0, 0, "vision_model.pre_layrnorm.weight");
	add(0, 2, s->proj, s->vh, 0, 0, "visual_projection.weight");

	if (write_tensors(out, dt, round) != 0)
		return 1;
	free(tensors);
	return 0;
}
