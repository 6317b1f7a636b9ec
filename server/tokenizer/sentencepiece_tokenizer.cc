// SentencePiece (tokenizer.model: Llama-2, Mistral) through the shim library, opened at run
// time with RTLD_LOCAL | RTLD_DEEPBIND so that Debian's libsentencepiece and the protobuf-lite
// it carries stay out of the process-wide symbol namespace (gRPC and libtorch load protobuf
// 3.21; sharing symbols with sentencepiece's copy crashes). This file never includes
// sentencepiece's header: its absl::string_view clashes with abseil's.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "server/tokenizer/spm_shim.h"
#include "server/tokenizer/tokenizer.h"
#include "server/tokenizer/utf8_util.h"

namespace attnscope {
namespace {

struct ShimApi {
  AttnscopeSpmLoadFn load;
  AttnscopeSpmFreeFn free_model;
  AttnscopeSpmPieceSizeFn piece_size;
  AttnscopeSpmIdToPieceFn id_to_piece;
  AttnscopeSpmPieceToIdFn piece_to_id;
  AttnscopeSpmFlagsFn flags;
  AttnscopeSpmEncodeFn encode;
  AttnscopeSpmDecodeFn decode;
  AttnscopeSpmFreeBufferFn free_buffer;
};

std::vector<std::string> ShimCandidates() {
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("ATTNSCOPE_SPM_SHIM"); env != nullptr && *env) {
    candidates.push_back(env);
  }
#ifdef ATTNSCOPE_SPM_SHIM_NAME
  std::error_code error;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) {
    candidates.push_back((exe.parent_path() / ATTNSCOPE_SPM_SHIM_NAME).string());
    candidates.push_back((exe.parent_path() / "../lib" / ATTNSCOPE_SPM_SHIM_NAME).string());
  }
#endif
#ifdef ATTNSCOPE_SPM_SHIM_BUILD_PATH
  candidates.push_back(ATTNSCOPE_SPM_SHIM_BUILD_PATH);
#endif
#ifdef ATTNSCOPE_SPM_SHIM_NAME
  candidates.push_back(ATTNSCOPE_SPM_SHIM_NAME);  // the dynamic linker's search path
#endif
  return candidates;
}

absl::StatusOr<const ShimApi*> LoadShim() {
  static std::once_flag once;
  static absl::StatusOr<const ShimApi*>* result = nullptr;
  std::call_once(once, [] {
    int mode = RTLD_NOW | RTLD_LOCAL;
#if !defined(__SANITIZE_ADDRESS__)
    mode |= RTLD_DEEPBIND;  // AddressSanitizer refuses DEEPBIND
#endif
    std::string tried;
    void* handle = nullptr;
    for (const std::string& path : ShimCandidates()) {
      if (path.find('/') != std::string::npos && !std::filesystem::exists(path)) {
        absl::StrAppend(&tried, " ", path, " (absent);");
        continue;
      }
      handle = dlopen(path.c_str(), mode);
      if (handle != nullptr) break;
      const char* why = dlerror();
      absl::StrAppend(&tried, " ", path, " (", why ? why : "dlopen failed", ");");
    }
    if (handle == nullptr) {
      result = new absl::StatusOr<const ShimApi*>(absl::FailedPreconditionError(absl::StrCat(
          "SentencePiece shim library not found (set ATTNSCOPE_SPM_SHIM to its path); tried:",
          tried)));
      return;
    }
    auto* api = new ShimApi();
    bool complete = true;
    auto bind = [&](auto* slot, const char* name) {
      *slot = reinterpret_cast<std::remove_pointer_t<decltype(slot)>>(dlsym(handle, name));
      complete = complete && *slot != nullptr;
    };
    bind(&api->load, "attnscope_spm_load");
    bind(&api->free_model, "attnscope_spm_free");
    bind(&api->piece_size, "attnscope_spm_piece_size");
    bind(&api->id_to_piece, "attnscope_spm_id_to_piece");
    bind(&api->piece_to_id, "attnscope_spm_piece_to_id");
    bind(&api->flags, "attnscope_spm_flags");
    bind(&api->encode, "attnscope_spm_encode");
    bind(&api->decode, "attnscope_spm_decode");
    bind(&api->free_buffer, "attnscope_spm_free_buffer");
    if (!complete) {
      result = new absl::StatusOr<const ShimApi*>(absl::FailedPreconditionError(
          "SentencePiece shim library lacks one of the attnscope_spm_* functions"));
      return;
    }
    result = new absl::StatusOr<const ShimApi*>(api);
  });
  return *result;
}

constexpr char kMetaSpace[] = "\xE2\x96\x81";  // "▁"

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const ShimApi* api, void* model) : api_(api), model_(model) {
    const int size = api_->piece_size(model_);
    pieces_.resize(size);
    display_.resize(size);
    flags_.resize(size);
    for (int id = 0; id < size; ++id) {
      size_t length = 0;
      const char* piece = api_->id_to_piece(model_, id, &length);
      pieces_[id].assign(piece, length);
      flags_[id] = api_->flags(model_, id);
      std::string display;
      for (size_t at = 0; at < pieces_[id].size();) {
        if (pieces_[id].compare(at, 3, kMetaSpace) == 0) {
          display.push_back(' ');
          at += 3;
        } else {
          display.push_back(pieces_[id][at++]);
        }
      }
      display_[id] = utf8::ReplaceInvalid(display);
      piece_ids_[pieces_[id]] = id;
      // Control pieces (<s>, </s>) written in text are recognised like HF's special tokens.
      if ((flags_[id] & kAttnscopeSpmControl) && !pieces_[id].empty()) specials_.push_back(id);
    }
    std::sort(specials_.begin(), specials_.end(),
              [&](int a, int b) { return pieces_[a].size() > pieces_[b].size(); });
  }
  ~SentencePieceTokenizer() override { api_->free_model(model_); }

  absl::StatusOr<Encoding> Encode(const std::string& text,
                                  bool parse_special_tokens) const override {
    const size_t invalid = utf8::FirstInvalidOffset(text);
    if (invalid != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "text is not valid UTF-8: byte 0x", absl::Hex(static_cast<unsigned char>(text[invalid])),
          " at offset ", invalid, " does not start a well-formed character"));
    }
    if (text.size() > static_cast<size_t>(UINT32_MAX)) {
      return absl::InvalidArgumentError("text longer than 4 GiB");
    }
    Encoding encoding;
    size_t segment_begin = 0;
    size_t pos = 0;
    while (parse_special_tokens && pos < text.size()) {
      int found = -1;
      for (int id : specials_) {
        if (text.compare(pos, pieces_[id].size(), pieces_[id]) == 0) {
          found = id;
          break;
        }
      }
      if (found < 0) {
        ++pos;
        continue;
      }
      absl::Status status = EncodeSegment(text, segment_begin, pos, &encoding);
      if (!status.ok()) return status;
      encoding.ids.push_back(found);
      encoding.tokens.push_back(display_[found]);
      encoding.spans.emplace_back(pos, pos + pieces_[found].size());
      pos += pieces_[found].size();
      segment_begin = pos;
    }
    absl::Status status = EncodeSegment(text, segment_begin, text.size(), &encoding);
    if (!status.ok()) return status;
    return encoding;
  }

  std::string Decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override {
    std::vector<int> kept;
    for (int64_t id : ids) {
      if (id < 0 || id >= vocab_size()) continue;
      if (skip_special_tokens && IsSpecial(id)) continue;
      kept.push_back(static_cast<int>(id));
    }
    char* text = nullptr;
    size_t length = 0;
    if (api_->decode(model_, kept.data(), kept.size(), &text, &length) != 0) return "";
    std::string decoded(text, length);
    api_->free_buffer(text);
    return utf8::ReplaceInvalid(decoded);
  }

  std::string TokenString(int64_t id) const override {
    return id >= 0 && id < vocab_size() ? display_[id] : "";
  }
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  bool IsSpecial(int64_t id) const override {
    return id >= 0 && id < vocab_size() &&
           (flags_[id] & (kAttnscopeSpmControl | kAttnscopeSpmUnknown)) != 0;
  }
  std::optional<int64_t> TokenToId(const std::string& token) const override {
    auto it = piece_ids_.find(token);
    if (it == piece_ids_.end()) return std::nullopt;
    return it->second;
  }

 private:
  absl::Status EncodeSegment(const std::string& text, size_t begin, size_t end,
                             Encoding* encoding) const {
    if (end <= begin) return absl::OkStatus();
    int* ids = nullptr;
    uint32_t *begins = nullptr, *ends = nullptr;
    size_t count = 0;
    char error[512] = {0};
    if (api_->encode(model_, text.data() + begin, end - begin, &ids, &begins, &ends, &count, error,
                     sizeof(error)) != 0) {
      return absl::InternalError(absl::StrCat("SentencePiece encode failed: ", error));
    }
    const size_t first = encoding->ids.size();
    for (size_t i = 0; i < count; ++i) {
      encoding->ids.push_back(ids[i]);
      encoding->tokens.push_back(TokenString(ids[i]));
      encoding->spans.emplace_back(begin + begins[i], begin + ends[i]);
    }
    // SentencePiece gives byte-fallback pieces of one character empty spans except the last;
    // when a run of byte pieces covers exactly as many bytes as it has pieces, give each its
    // own byte so spans stay useful for plots.
    for (size_t i = first; i < encoding->ids.size();) {
      if (!(flags_[encoding->ids[i]] & kAttnscopeSpmByte)) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < encoding->ids.size() && (flags_[encoding->ids[j]] & kAttnscopeSpmByte)) ++j;
      const int64_t run_begin = encoding->spans[i].first, run_end = encoding->spans[j - 1].second;
      if (run_end - run_begin == static_cast<int64_t>(j - i)) {
        for (size_t k = i; k < j; ++k) {
          encoding->spans[k] = {run_begin + static_cast<int64_t>(k - i),
                                run_begin + static_cast<int64_t>(k - i) + 1};
        }
      }
      i = j;
    }
    api_->free_buffer(ids);
    api_->free_buffer(begins);
    api_->free_buffer(ends);
    return absl::OkStatus();
  }

  const ShimApi* api_;
  void* model_;
  std::vector<std::string> pieces_, display_;
  std::vector<int> flags_;
  std::vector<int> specials_;
  absl::flat_hash_map<std::string, int> piece_ids_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path) {
  auto api = LoadShim();
  if (!api.ok()) return api.status();
  char error[512] = {0};
  void* model = (*api)->load(path.c_str(), error, sizeof(error));
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load SentencePiece model ", path, ": ", error));
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceTokenizer(*api, model));
}

}  // namespace attnscope
