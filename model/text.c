/*
 * text.c: the text tower's forward pass. Token and position embeddings are
 * added; then, for CLIP, attention is causal and final_layer_norm is pooled
 * at the <|endoftext|> position, then projected (attention being causal, a
 * batch of texts only runs as many positions as its longest text needs, not
 * the full context). SigLIP attends over every position, pads included (no
 * mask), and pools the last position, through its head (a Linear with
 * bias): all of the context runs, always. Chinese-CLIP's BERT tower is
 * encode_bert below.
 */
#include <string.h>

#include "encoder_int.h"
#include "gemm_int.h"
#include "weights_int.h"

/* Chinese-CLIP's BERT: word + token type 0 + position embeddings, their
 * LayerNorm, post-norm blocks attending over the text's own tokens (the
 * mask), and the [CLS] position (0) projected; no pooler, no final norm.
 * The mask is the row up to its last [SEP]: the tokenizer ends every text
 * with [SEP] and pads with [PAD] after it, while a [SEP] or [PAD] written
 * in the text comes before that one, so this is the tokenizer's own length
 * (never ids != [PAD]). A row without [SEP] counts whole. */
static int encode_bert(clip_ctx *c, int B, const int32_t *ids, float *out, clip_err *err)
{
	const clip_tower *tw = &c->m->text;
	const clip_tower_cfg *cfg = &tw->cfg;
	int ctx = cfg->positions, d = cfg->hidden, T = 1;
	for (int b = 0; b < B; b++) {
		const int32_t *r = ids + (size_t)b * ctx;
		int n = ctx;
		for (int t = 0; t < ctx; t++)
			if (r[t] < 0 || r[t] >= cfg->vocab)
				return clip_fail(err, CLIP_EINVAL, "token id %d at position %d is outside the "
				                 "vocabulary of %d", r[t], t, cfg->vocab);
		for (int t = ctx - 1; t >= 0; t--)
			if (r[t] == c->m->sep_id) {
				n = t + 1;
				break;
			}
		c->eot[b] = n;
		T = n > T ? n : T;
	}
	/* Positions past every item's mask change nothing: the batch runs T. */
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			const float *pe = tw->pos_emb + (size_t)t * d;
			float *xi = c->x + ((size_t)b * T + t) * d;
			w_row(tw->tok_emb, tw->tok_raw, tw->tok_dtype, ids[(size_t)b * ctx + t], d, xi);
			for (int j = 0; j < d; j++)
				xi[j] += pe[j] + tw->type_emb[j];
		}
	enc_layernorm(c->x, c->x, B * T, d, tw->emb_ln_w, tw->emb_ln_b, cfg->eps);
	for (int l = 0; l < cfg->layers; l++)
		enc_block_post(cfg, &tw->layers[l], c, B, T, c->eot);
	for (int b = 0; b < B; b++)
		memcpy(c->pooled + (size_t)b * d, c->x + (size_t)b * T * d, (size_t)d * sizeof *out);
	mm_linear(B, &tw->proj, c->pooled, out, 0);
	return enc_check_finite(out, (size_t)B * c->m->cfg.projection, err);
}

int clip_encode_texts(clip_ctx *c, int B, const int32_t *ids, float *out, clip_err *err)
{
	const clip_tower *tw = &c->m->text;
	const clip_tower_cfg *cfg = &tw->cfg;
	int ctx = cfg->positions, d = cfg->hidden;
	if (B < 1 || B > c->max_batch)
		return clip_fail(err, CLIP_EINVAL, "batch of %d texts; this context takes 1..%d", B,
		                 c->max_batch);
	if (!ids || !out)
		return clip_fail(err, CLIP_EINVAL, "token ids and output are required");

	if (c->m->cfg.text_bert)
		return encode_bert(c, B, ids, out, err);
	int siglip = c->m->cfg.family == CLIP_FAMILY_SIGLIP;
	/* The pooled position: transformers' rule. With the legacy
	 * eos_token_id 2 it is the first occurrence of the highest id
	 * (<|endoftext|> is the last token of the vocabulary). */
	int T = 1;
	for (int b = 0; b < B; b++) {
		const int32_t *r = ids + (size_t)b * ctx;
		int pos = -1;
		for (int t = 0; t < ctx; t++) {
			if (r[t] < 0 || r[t] >= cfg->vocab)
				return clip_fail(err, CLIP_EINVAL, "token id %d at position %d is outside the "
				                 "vocabulary of %d", r[t], t, cfg->vocab);
			if (cfg->eos_token_id == 2) {
				if (pos < 0 || r[t] > r[pos])
					pos = t;
			} else if (pos < 0 && r[t] == cfg->eos_token_id) {
				pos = t;
			}
		}
		if (pos < 0 || siglip)
			pos = ctx - 1;
		c->eot[b] = pos;
		if (pos + 1 > T)
			T = pos + 1;
	}
	/* Causal attention: positions past the longest <|endoftext|> cannot
	 * change any pooled output, so the batch runs T positions only. */
	for (int b = 0; b < B; b++)
		for (int t = 0; t < T; t++) {
			const float *pe = tw->pos_emb + (size_t)t * d;
			float *xi = c->x + ((size_t)b * T + t) * d;
			w_row(tw->tok_emb, tw->tok_raw, tw->tok_dtype, ids[(size_t)b * ctx + t], d, xi);
			for (int j = 0; j < d; j++)
				xi[j] += pe[j];
		}
	for (int l = 0; l < cfg->layers; l++)
		enc_block(cfg, &tw->layers[l], c, B, T, !siglip);
	for (int b = 0; b < B; b++)
		enc_layernorm(c->x + ((size_t)b * T + c->eot[b]) * d, c->pooled + (size_t)b * d, 1, d,
		          tw->post_ln_w, tw->post_ln_b, cfg->eps);
	mm_linear(B, &tw->proj, c->pooled, out, 0);
	return enc_check_finite(out, (size_t)B * c->m->cfg.projection, err);
}

