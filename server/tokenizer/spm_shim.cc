// The SentencePiece shim: the only file that includes sentencepiece's header (which carries
// its own absl::string_view and must not meet abseil's), exposing a C interface.
#include "server/tokenizer/spm_shim.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#define ATTNSCOPE_SPM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

void CopyError(const std::string& message, char* error, size_t error_size) {
  if (error == nullptr || error_size == 0) return;
  std::strncpy(error, message.c_str(), error_size - 1);
  error[error_size - 1] = '\0';
}

template <typename T>
T* CopyOut(const std::vector<T>& values) {
  T* out = static_cast<T*>(std::malloc(sizeof(T) * (values.empty() ? 1 : values.size())));
  if (out != nullptr && !values.empty()) std::memcpy(out, values.data(), sizeof(T) * values.size());
  return out;
}

sentencepiece::SentencePieceProcessor* Processor(void* model) {
  return static_cast<sentencepiece::SentencePieceProcessor*>(model);
}

}  // namespace

// No exception may cross the C interface: a protobuf version clash (the shim opened without
// RTLD_DEEPBIND, as under AddressSanitizer) throws inside Load.
ATTNSCOPE_SPM_EXPORT void* attnscope_spm_load(const char* path, char* error, size_t error_size) {
  try {
    auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = processor->Load(path);
    if (!status.ok()) {
      CopyError(status.ToString(), error, error_size);
      return nullptr;
    }
    return processor.release();
  } catch (const std::exception& exception) {
    CopyError(std::string("sentencepiece failed: ") + exception.what(), error, error_size);
  } catch (...) {
    CopyError("sentencepiece failed with an unknown exception", error, error_size);
  }
  return nullptr;
}

ATTNSCOPE_SPM_EXPORT void attnscope_spm_free(void* model) { delete Processor(model); }

ATTNSCOPE_SPM_EXPORT int attnscope_spm_piece_size(void* model) {
  return Processor(model)->GetPieceSize();
}

ATTNSCOPE_SPM_EXPORT const char* attnscope_spm_id_to_piece(void* model, int id, size_t* length) {
  const std::string& piece = Processor(model)->IdToPiece(id);
  *length = piece.size();
  return piece.data();
}

ATTNSCOPE_SPM_EXPORT int attnscope_spm_piece_to_id(void* model, const char* piece, size_t length) {
  const std::string wanted(piece, length);
  const int id = Processor(model)->PieceToId(wanted);
  // SentencePiece answers unk_id for unknown pieces; only an exact piece counts.
  if (id < 0 || Processor(model)->IdToPiece(id) != wanted) return -1;
  return id;
}

ATTNSCOPE_SPM_EXPORT int attnscope_spm_flags(void* model, int id) {
  auto* p = Processor(model);
  return (p->IsControl(id) ? kAttnscopeSpmControl : 0) |
         (p->IsUnknown(id) ? kAttnscopeSpmUnknown : 0) | (p->IsByte(id) ? kAttnscopeSpmByte : 0) |
         (p->IsUnused(id) ? kAttnscopeSpmUnused : 0);
}

ATTNSCOPE_SPM_EXPORT int attnscope_spm_encode(void* model, const char* text, size_t length,
                                              int** ids, uint32_t** begins, uint32_t** ends,
                                              size_t* count, char* error, size_t error_size) {
  try {
    const auto encoded = Processor(model)->EncodeAsImmutableProto(std::string(text, length));
    std::vector<int> id_values;
    std::vector<uint32_t> begin_values, end_values;
    for (const auto& piece : encoded.pieces()) {
      id_values.push_back(static_cast<int>(piece.id()));
      begin_values.push_back(piece.begin());
      end_values.push_back(piece.end());
    }
    *ids = CopyOut(id_values);
    *begins = CopyOut(begin_values);
    *ends = CopyOut(end_values);
    *count = id_values.size();
    if (*ids == nullptr || *begins == nullptr || *ends == nullptr) {
      CopyError("out of memory", error, error_size);
      return 1;
    }
    return 0;
  } catch (const std::exception& exception) {
    CopyError(std::string("sentencepiece failed: ") + exception.what(), error, error_size);
    return 1;
  }
}

ATTNSCOPE_SPM_EXPORT int attnscope_spm_decode(void* model, const int* ids, size_t count,
                                              char** text, size_t* length) {
  std::string decoded;
  try {
    const auto status = Processor(model)->Decode(std::vector<int>(ids, ids + count), &decoded);
    if (!status.ok()) return 1;
  } catch (const std::exception&) {
    return 1;
  }
  *text = static_cast<char*>(std::malloc(decoded.size() + 1));
  if (*text == nullptr) return 1;
  std::memcpy(*text, decoded.data(), decoded.size());
  (*text)[decoded.size()] = '\0';
  *length = decoded.size();
  return 0;
}

ATTNSCOPE_SPM_EXPORT void attnscope_spm_free_buffer(void* buffer) { std::free(buffer); }
