#include "server/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8

#include <pcre2.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"

namespace attnscope::pretokenizer {

namespace {

struct Pcre2CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};

}  // namespace

class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<Regex>> Compile(const std::string& pattern,
                                                        const std::string& origin) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat(origin, ": pre-tokenizer regex '", pattern,
                                                     "' does not compile at offset ", error_offset,
                                                     ": ", reinterpret_cast<char*>(message)));
    }
    auto regex = std::make_shared<Regex>();
    regex->code_.reset(code);
    regex->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return regex;
  }

  // Appends the [begin, end) of every non-empty match in subject[0, length).
  absl::Status FindAll(const char* subject, size_t length,
                       std::vector<std::pair<size_t, size_t>>* matches) const {
    MatchScratch& scratch = Scratch();
    size_t offset = 0;
    while (offset <= length) {
      const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(subject), length, offset,
                                 PCRE2_NO_UTF_CHECK, scratch.match_data, scratch.context);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        return absl::ResourceExhaustedError(
            absl::StrCat("pre-tokenizer regex failed on a ", length,
                         "-byte piece: ", reinterpret_cast<char*>(message)));
      }
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.match_data);
      const size_t match_begin = ovector[0], match_end = ovector[1];
      if (match_end > match_begin) {
        matches->emplace_back(match_begin, match_end);
        offset = match_end;
      } else {
        // Empty match: step over one whole character.
        if (match_begin >= length) break;
        offset = match_begin + 1;
        while (offset < length && (static_cast<unsigned char>(subject[offset]) & 0xC0) == 0x80) {
          ++offset;
        }
      }
    }
    return absl::OkStatus();
  }

 private:
  // Match data and a JIT stack per thread: Encode is const and may run concurrently.
  struct MatchScratch {
    pcre2_match_data* match_data = pcre2_match_data_create(32, nullptr);
    pcre2_match_context* context = pcre2_match_context_create(nullptr);
    pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
    MatchScratch() { pcre2_jit_stack_assign(context, nullptr, jit_stack); }
    ~MatchScratch() {
      pcre2_match_data_free(match_data);
      pcre2_match_context_free(context);
      pcre2_jit_stack_free(jit_stack);
    }
  };
  static MatchScratch& Scratch() {
    thread_local MatchScratch scratch;
    return scratch;
  }

  std::unique_ptr<pcre2_code, Pcre2CodeDeleter> code_;
  bool jit_ = false;
};

const char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::StatusOr<std::shared_ptr<Regex>> CompileRegex(const std::string& pattern,
                                                    const std::string& origin) {
  return Regex::Compile(pattern, origin);
}

std::string QuoteRegexLiteral(const std::string& literal) {
  std::string out = "\\Q";
  for (size_t i = 0; i < literal.size(); ++i) {
    if (literal.compare(i, 2, "\\E") == 0) {
      out += "\\E\\\\E\\Q";
      ++i;
    } else {
      out.push_back(literal[i]);
    }
  }
  return out + "\\E";
}

absl::Status ApplyStep(const PreTokenizerStep& step, const std::string& text,
                       std::vector<PreToken>* tokens) {
  std::vector<PreToken> out;
  out.reserve(tokens->size());
  std::vector<std::pair<size_t, size_t>> matches;
  std::string scratch;
  for (PreToken token : *tokens) {
    SplitBehavior behavior = step.behavior;
    bool invert = step.invert;
    if (step.kind == PreTokenizerStep::Kind::kByteLevel) {
      if (step.add_prefix_space && !token.prefix_space &&
          (token.end == token.begin || text[token.begin] != ' ')) {
        token.prefix_space = true;
      }
      if (!step.regex) {
        out.push_back(token);
        continue;
      }
      behavior = SplitBehavior::kIsolated;
      invert = false;
    }
    // The subject includes the inserted space, so regexes see what the reference sees.
    const char* subject = text.data() + token.begin;
    size_t length = token.end - token.begin;
    const int64_t shift = token.prefix_space ? 1 : 0;
    if (token.prefix_space) {
      scratch.assign(" ");
      scratch.append(text, token.begin, length);
      subject = scratch.data();
      length = scratch.size();
    }
    matches.clear();
    absl::Status status = step.regex->FindAll(subject, length, &matches);
    if (!status.ok()) return status;
    // Segments of the subject: (begin, end, is_match).
    struct Segment {
      size_t begin, end;
      bool is_match;
    };
    std::vector<Segment> segments;
    size_t cursor = 0;
    for (const auto& [b, e] : matches) {
      if (b > cursor) segments.push_back({cursor, b, invert});
      segments.push_back({b, e, !invert});
      cursor = e;
    }
    if (cursor < length) segments.push_back({cursor, length, invert});
    std::vector<std::pair<size_t, size_t>> pieces;
    bool previous_was_match = false;
    for (size_t k = 0; k < segments.size(); ++k) {
      const Segment& s = segments[k];
      switch (behavior) {
        case SplitBehavior::kRemoved:
          if (!s.is_match) pieces.emplace_back(s.begin, s.end);
          break;
        case SplitBehavior::kIsolated:
          pieces.emplace_back(s.begin, s.end);
          break;
        case SplitBehavior::kMergedWithPrevious:
          if (s.is_match && !pieces.empty()) {
            pieces.back().second = s.end;
          } else {
            pieces.emplace_back(s.begin, s.end);
          }
          break;
        case SplitBehavior::kMergedWithNext:
          if (previous_was_match && !pieces.empty()) {
            pieces.back().second = s.end;
          } else {
            pieces.emplace_back(s.begin, s.end);
          }
          break;
        case SplitBehavior::kContiguous:
          if (s.is_match && previous_was_match && !pieces.empty()) {
            pieces.back().second = s.end;
          } else {
            pieces.emplace_back(s.begin, s.end);
          }
          break;
      }
      previous_was_match = s.is_match;
    }
    for (const auto& [b, e] : pieces) {
      PreToken piece;
      piece.prefix_space = token.prefix_space && b == 0;
      piece.begin = token.begin + std::max<int64_t>(0, static_cast<int64_t>(b) - shift);
      piece.end = token.begin + static_cast<int64_t>(e) - shift;
      if (piece.end > piece.begin || piece.prefix_space) out.push_back(piece);
    }
  }
  *tokens = std::move(out);
  return absl::OkStatus();
}

}  // namespace attnscope::pretokenizer
