/*
 * spm_shim.cc: the extern "C" shim over libsentencepiece (API and
 * thread-safety in spm_shim.h). The only C++ file of the tree, and kept to
 * this: no logic beyond calling the library, copying its answers into C
 * types and turning its failures, status or exception, into return codes.
 */
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>

#include "spm_shim.h"

struct spm_model {
	sentencepiece::SentencePieceProcessor sp;
};

static void set_msg(char *msg, size_t cap, const char *what, const char *detail)
{
	if (msg && cap > 0)
		snprintf(msg, cap, "%s%s%s", what, detail && *detail ? ": " : "", detail ? detail : "");
}

extern "C" int spm_load(const char *path, spm_model **out, char *msg, size_t msgcap)
{
	if (!out)
		return SPM_EINVAL;
	*out = nullptr;
	if (!path) {
		set_msg(msg, msgcap, "spm_load: path is NULL", nullptr);
		return SPM_EINVAL;
	}
	spm_model *m = nullptr;
	try {
		m = new spm_model;
		const auto st = m->sp.Load(path);
		if (!st.ok()) {
			set_msg(msg, msgcap, "not a SentencePiece model", st.error_message());
			delete m;
			return SPM_EMODEL;
		}
		if (m->sp.GetPieceSize() <= 0) {
			set_msg(msg, msgcap, "not a SentencePiece model", "it has no pieces");
			delete m;
			return SPM_EMODEL;
		}
	} catch (const std::bad_alloc &) {
		delete m;
		set_msg(msg, msgcap, "out of memory loading the SentencePiece model", nullptr);
		return SPM_ENOMEM;
	} catch (const std::exception &e) {
		delete m;
		set_msg(msg, msgcap, "not a SentencePiece model", e.what());
		return SPM_EMODEL;
	} catch (...) {
		delete m;
		set_msg(msg, msgcap, "not a SentencePiece model", "the library failed");
		return SPM_EMODEL;
	}
	*out = m;
	return SPM_OK;
}

extern "C" void spm_free(spm_model *m)
{
	try {
		delete m;
	} catch (...) {
	}
}

extern "C" int spm_encode(const spm_model *m, const char *text, size_t len, int32_t *ids,
                          size_t cap, size_t *total, char *msg, size_t msgcap)
{
	if (total)
		*total = 0;
	if (!m || !text || (!ids && cap > 0) || !total) {
		set_msg(msg, msgcap, "spm_encode: NULL argument", nullptr);
		return SPM_EINVAL;
	}
	try {
		std::vector<int> v;
		const auto st = m->sp.Encode(absl::string_view(text, len), &v);
		if (!st.ok()) {
			set_msg(msg, msgcap, "SentencePiece cannot encode the text", st.error_message());
			return SPM_EINTERNAL;
		}
		size_t n = v.size() < cap ? v.size() : cap;
		for (size_t i = 0; i < n; i++)
			ids[i] = (int32_t)v[i];
		*total = v.size();
	} catch (const std::bad_alloc &) {
		set_msg(msg, msgcap, "out of memory in SentencePiece", nullptr);
		return SPM_ENOMEM;
	} catch (const std::exception &e) {
		set_msg(msg, msgcap, "SentencePiece cannot encode the text", e.what());
		return SPM_EINTERNAL;
	} catch (...) {
		set_msg(msg, msgcap, "SentencePiece cannot encode the text", "the library failed");
		return SPM_EINTERNAL;
	}
	return SPM_OK;
}

extern "C" int spm_piece_count(const spm_model *m)
{
	try {
		return m ? m->sp.GetPieceSize() : 0;
	} catch (...) {
		return 0;
	}
}

extern "C" int32_t spm_piece_id(const spm_model *m, const char *s)
{
	if (!m || !s)
		return -1;
	try {
		const int id = m->sp.PieceToId(s);
		if (id < 0 || id >= m->sp.GetPieceSize() || m->sp.IdToPiece(id) != s)
			return -1;
		return id;
	} catch (...) {
		return -1;
	}
}

extern "C" const char *spm_piece(const spm_model *m, int32_t id, size_t *len)
{
	if (len)
		*len = 0;
	if (!m)
		return nullptr;
	try {
		if (id < 0 || id >= m->sp.GetPieceSize())
			return nullptr;
		const std::string &s = m->sp.IdToPiece(id);
		if (len)
			*len = s.size();
		return s.c_str();
	} catch (...) {
		return nullptr;
	}
}
