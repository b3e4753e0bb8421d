/* fusion.h: reciprocal-rank fusion of a vector ranking and a keyword
 * ranking, for "mode": "hybrid" searches. */
#ifndef CLIPD_FUSION_H
#define CLIPD_FUSION_H

#include <stdint.h>

/* One fused result: its id, its score, and its 1-based rank in each input
 * list (0 where it is absent from that list). */
typedef struct fused {
	int64_t id;
	double score;
	int64_t vector_rank, keyword_rank;
} fused;

/* Fuses the rankings vids[0..nv) and kids[0..nk) (best first, no id twice
 * in one list): each id scores the sum over the lists it is in of
 * 1 / (rrf_k + rank) (Cormack, Clarke and Buettcher, SIGIR 2009: "Reciprocal
 * rank fusion outperforms Condorcet and individual rank learning methods",
 * with k = 60). out must hold nv + nk entries; *n is set to the number of
 * distinct ids, sorted by score, then the better vector rank, then the
 * better keyword rank, then id. */
void fusion_rrf(const int64_t *vids, int nv, const int64_t *kids, int nk, int rrf_k, fused *out,
               int *n);

#endif
